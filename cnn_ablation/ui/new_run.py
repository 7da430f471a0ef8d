"""New run: build a variant by switching layers on the drawn network, then launch it.

Nothing here shows a traceback: every problem is a message beside the field it is about, the
summary stays for the last input that could be used, and Launch is disabled with the reason
beside it. Every widget keeps its value for the session (`persist_state="session"`), so leaving
the page and coming back shows the form as it was left."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from cnn_ablation.architecture import PRESETS, Conv, LayerRow, summary_rows
from cnn_ablation.config import (
    BUILTIN_DATASETS,
    MAX_SEEDS,
    ConfigError,
    RunConfig,
    check_name,
    defaults,
)
from cnn_ablation.data import datasets
from cnn_ablation.data.arrays import DatasetInfo, DatasetUnavailable
from cnn_ablation.jobs.launch import prepare, submit, with_seeds
from cnn_ablation.networks import registry as networks
from cnn_ablation.settings import settings
from cnn_ablation.storage.lookups import same_config_runs
from cnn_ablation.ui.common import (
    engine_or_stop,
    folder_within_roots,
    page_file,
    pct,
    plain,
    plural,
    roots_text,
    worker_banner,
)
from cnn_ablation.ui.new_run_parts import (
    FIELD_NAMES,
    availability,
    dataset_label,
    network_upload,
    number_problems,
)

DEFAULTS = defaults()
# Every widget's value outlives a page switch (persist_state) and lives in the page's URL (bind):
# a reload or a pasted link opens the form as it was, like the Runs page's filters. Only values
# that differ from the defaults appear in the URL.
KEPT: dict[str, Any] = {"persist_state": "session", "bind": "query-params"}
SHORT_KINDS = {"BatchNormalization": "BatchNorm", "InputLayer": "Input"}  # fits 800 px
# Fields whose problem is shown under the training inputs / under "More settings".
TRAINING_FIELDS = ("epochs", "batch_size", "learning_rate", "seeds")
MORE_FIELDS = ("val_split", "limit_train")

engine = engine_or_stop()
worker_banner(engine)

st.title("New run")
st.caption("Switch BatchNorm per layer and set dropout on the network below; the parameter count "
           "follows as you go. Launch queues the run; a background worker trains it.")


top = st.columns([1, 1, 1])
known = {n.key: n for n in networks.list_networks()}
uploaded = st.session_state.pop("uploaded_network", None)
if uploaded in known:  # just uploaded: select it
    st.session_state["preset"] = uploaded
elif st.session_state.get("preset") not in (None, *known):  # a kept choice that is gone
    del st.session_state["preset"]
preset = top[0].selectbox("Network", list(known), key="preset", **KEPT,
                          format_func=lambda k: known[k].title + ("" if known[k].kind == "preset"
                                                                 else f" ({known[k].kind})"))
network = known[preset]
with top[0].expander("Your own network"):
    network_upload()
choices = [d for d in BUILTIN_DATASETS] + ["folder:…"]
default_ds = "cifar10" if availability("cifar10").state == "ready" else "fashion_mnist"
dataset_choice = top[1].selectbox("Dataset", choices, index=choices.index(default_ds),
                                  format_func=lambda d: d if d == "folder:…" else dataset_label(d),
                                  key="data", **KEPT)  # URL ?data=: the Runs page has ?dataset=
dataset = dataset_choice
dataset_problem: str | None = None  # why the dataset cannot be used; shown where it was chosen
info: DatasetInfo | None = None
if dataset_choice == "folder:…":
    roots = settings().data_roots
    path = top[1].text_input("Image folder (with train/<class>/ and test/<class>/)",
                             key="folder_path", **KEPT,
                             help="A folder under " + plain(roots_text(roots)) +
                             " (ABLATION_DATA_ROOTS); images of mixed sizes are resized to the "
                             "most common size.")
    dataset = "folder:"
    if not path.strip():
        dataset_problem = "enter an image folder first"
        top[1].caption(f"Allowed: folders under {plain(roots_text(roots))} (`ABLATION_DATA_ROOTS`).")
    else:
        folder, refusal = folder_within_roots(path, roots)
        if folder is None:  # refused before anything in it is read
            dataset_problem = "the image folder is outside ABLATION_DATA_ROOTS (see Dataset)"
            top[1].error(f"**Folder refused.** {plain(refusal)}")
        else:  # scanned on every rerun (not cached), so a fixed folder is seen at once
            dataset = f"folder:{folder}"
            try:
                info = datasets.dataset_info(dataset)
            except (DatasetUnavailable, ConfigError) as exc:
                dataset_problem = "the image folder cannot be used (see Dataset)"
                top[1].error(f"**This folder cannot be used.** {plain(exc)}")
            except Exception as exc:  # an image library's own error: still a message, no trace
                dataset_problem = "the image folder cannot be used (see Dataset)"
                top[1].error(f"**This folder cannot be used.** {plain(type(exc).__name__)}: "
                             f"{plain(exc)}")
            else:
                h, w, c = info.shape
                top[1].caption(f"{info.train_size:,} train / {info.test_size:,} test images, "
                               f"{info.num_classes} classes, {h}×{w}×{c} "
                               f"(the most common size; others are resized)")
run_name = top[2].text_input("Name (optional)", key="run_name", **KEPT,
                             placeholder="e.g. no BN in the middle")
name_slot = top[2].container()  # a problem with the name is shown here

if dataset_choice != "folder:…":
    state = availability(dataset)
    note = f"Dataset **{plain(dataset)}**: {plain(state.state)} ({plain(state.detail)})"
    if state.state == "ready":
        st.caption(note)
    else:
        (st.warning if state.state == "needs download" else st.error)(note)

custom = network.kind != "preset"
spec = PRESETS["seed" if custom else preset]
left, right = st.columns([1, 1], gap="large")
probe_shape = info.shape if info is not None else (32, 32, 3)
probe_classes = info.num_classes if info is not None else 10
bn_off: list[str] = []
layer_rates: list[tuple[str, float]] = []
network_problem: str | None = None
base_probe: dict | None = None
if custom:
    with st.spinner("Reading the network's layers…"):
        try:
            base_probe = networks.probe(network.key, probe_shape, probe_classes)
        except ConfigError as exc:
            base_probe = {"ok": False, "error": str(exc)}
    if not base_probe["ok"]:
        network_problem = base_probe["error"]

with left:
    st.subheader("Network")
    bn: list[bool] = []
    dropout = DEFAULTS.dropout
    if custom:
        with st.container(border=True):
            st.markdown(f"**{plain(network.title)}** · {plain(network.kind)} "
                        f"`{plain(network.key.rsplit('@', 1)[1])}` · input scaled to [0, 1]")
        if network_problem is not None:
            st.error(f"**This network cannot be used here.** {plain(network_problem)}")
        else:
            assert base_probe is not None
            for layer in base_probe["batchnorm"]:
                with st.container(border=True):
                    text, switch = st.container(), st.container()  # stacked: room for the label
                    on = switch.toggle(f"BatchNorm {layer['name']}", value=True,
                                       key=f"custom_bn_{layer['name']}", **KEPT,
                                       help=f"BatchNorm {layer['name']} on or off")
                    text.markdown(f"**{plain(layer['name'])}** · BatchNormalization, "
                                  f"{layer['channels']} channels (−{4 * layer['channels']:,} "
                                  "params when off)")
                    if not on:
                        bn_off.append(layer["name"])
            for layer in base_probe["dropout"]:
                with st.container(border=True):
                    rate = st.slider(f"Dropout rate of {layer['name']}", 0.0, 0.95,
                                     float(layer["rate"]), 0.05,
                                     key=f"custom_drop_{layer['name']}", **KEPT)
                    if abs(rate - layer["rate"]) > 1e-9:
                        layer_rates.append((layer["name"], float(rate)))
    if not custom:  # your own network's card above says its input; its layers follow it
        with st.container(border=True):
            st.markdown("**Input** · uint8 image, rescaled to [0, 1] inside the model")
    for layer in () if custom else spec.hidden:
        with st.container(border=True):
            if isinstance(layer, Conv):
                what = (f"**{layer.name}** · Conv2D {layer.filters} filters "
                        f"{layer.kernel}×{layer.kernel}, stride {layer.stride}")
            else:
                what = f"Flatten → **{layer.name}** · Dense {layer.units} units"
            if not layer.bn_switch:
                st.markdown(what)
                continue
            # The switch under its text (room for its label on a narrow screen), with a distinct
            # accessible name per switch (a screen reader reads the label).
            text, switch = st.container(), st.container()
            on = switch.toggle(f"BatchNorm after {layer.name}", value=True,
                               key=f"bn_{layer.name}", **KEPT)
            bn.append(on)
            chain = "→ BatchNorm → LeakyReLU" if on else "→ ~~BatchNorm~~ → LeakyReLU"
            text.markdown(f"{what}  \n{chain}")
            if getattr(layer, "dropout", False):
                dropout = st.slider("Dropout rate after dense_1", 0.0, 0.95, DEFAULTS.dropout,
                                    0.05, key="dropout", **KEPT,
                                    help="Fraction of dense_1's outputs zeroed at each step "
                                         "(the chapter uses 0.5). Allowed: [0, 1).")
    if not custom:
        with st.container(border=True):
            st.markdown("**output** · Dense, one unit per class, softmax")
    network_slot = st.container()  # a problem with a switch or rate is shown here

with right:
    st.subheader("Training")
    # Two by two, so every label and value has room on a narrow screen.
    c1, c2 = st.columns(2)
    c3, c4 = st.columns(2)
    epochs = c1.number_input("Epochs", value=DEFAULTS.epochs, step=1, key="epochs",
                             **KEPT)
    batch = c2.number_input("Batch size", value=DEFAULTS.batch_size, step=8, key="batch_size",
                            **KEPT)
    lr = c3.number_input("Learning rate (Adam)", value=DEFAULTS.learning_rate, step=0.0001,
                         format="%.5f", key="lr", **KEPT)
    # No max_value: the browser would only outline a value over it in red; the limit is said
    # in words below instead.
    seeds = c4.number_input("Seeds", value=1, step=1, key="seeds", **KEPT,
                            help=f"N repeats of this variant with seeds 0..N-1 (1 to {MAX_SEEDS}): "
                                 "the spread between them is the noise any effect must beat.")
    training_slot = st.container()  # a problem with the four fields above is shown here
    with st.expander("More settings"):
        m1, m2 = st.columns(2)
        val_split = m1.number_input("Validation split", value=DEFAULTS.val_split, step=0.05,
                                    key="val_split", **KEPT,
                                    help="Fraction of training images held out")
        limit = m2.number_input("Training images (0 = all)", value=0, step=1000,
                                key="limit_train", **KEPT,
                                help="Use only the first N training images; 0 uses all.")
    more_slot = st.container()  # a problem with the settings above is shown here

    # What the summary shows: this dataset's input, else the last one that worked, else the
    # network's default; a bad dataset never hides the summary.
    if dataset_problem is None and info is None:
        try:
            info = datasets.dataset_info(dataset)
        except (DatasetUnavailable, ConfigError) as exc:
            dataset_problem = str(exc)
        except Exception as exc:  # whatever a loader raises: a message, never a traceback
            dataset_problem = f"dataset {dataset}: {type(exc).__name__}: {exc}"
    if info is not None:
        st.session_state["last_input"] = (dataset, info.shape, info.num_classes)
    last = st.session_state.get("last_input")
    shown_from = dataset
    if info is not None:
        shape, classes = info.shape, info.num_classes
    elif last is not None:
        shown_from, shape, classes = last
    else:
        shown_from, shape, classes = "", spec.input_shape, 10

    config: RunConfig | None = None
    problem: str | None = None
    params: int | None = None
    seeds_problem: str | None = None
    if isinstance(seeds, bool) or seeds is None or not 1 <= int(seeds) <= MAX_SEEDS \
            or int(seeds) != seeds:
        seeds_problem = (f"Seeds: {seeds:g} is over the limit of {MAX_SEEDS} runs per launch"
                         if seeds is not None and seeds > MAX_SEEDS else
                         f"Seeds: {seeds} is not allowed; allowed: a whole number from 1 to "
                         f"{MAX_SEEDS}")
    # Each number is checked alone first, so every bad one is named at once (epochs 0 and a
    # batch size of 100,000,000 are two messages, not the first of them).
    slots = {**{f: training_slot for f in TRAINING_FIELDS}, **{f: more_slot for f in MORE_FIELDS}}
    bad_numbers = number_problems([("epochs", epochs), ("batch_size", batch),
                                   ("learning_rate", lr), ("val_split", val_split),
                                   ("limit_train", int(limit) or None)], slots)
    if dataset_problem is not None:
        problem = dataset_problem
    elif network_problem is not None:
        problem = "the network cannot be used (see the Network column)"
    elif bad_numbers:
        problem = "; ".join(bad_numbers) + (" (the reasons are shown at the fields)"
                                            if len(bad_numbers) > 1 else
                                            " (the reason is shown at the field)")
    else:
        try:
            check_name(run_name)
            common = dict(dataset=dataset, epochs=int(epochs), batch_size=int(batch),
                          learning_rate=float(lr), val_split=float(val_split),
                          limit_train=int(limit) or None)
            if custom:
                draft = RunConfig(network=network.key, bn_off=tuple(bn_off),
                                  layer_dropout=tuple(layer_rates), **common)
            else:
                draft = RunConfig(preset=preset, bn=tuple(bn), dropout=float(dropout),
                                  **common)
            with st.spinner("Counting parameters…"):
                config, params = prepare(draft)
        except (ConfigError, DatasetUnavailable) as exc:
            field = getattr(exc, "field", "dataset")
            where = {**{f: training_slot for f in TRAINING_FIELDS},
                     **{f: more_slot for f in MORE_FIELDS}, "name": name_slot,
                     "dataset": top[1]}.get(field, network_slot)
            where.error(plain(exc))
            shown = FIELD_NAMES.get(field, field)
            given = getattr(exc, "given", None)
            problem = (f"{shown} {given!r} is not allowed" if given is not None else
                       f"{shown} cannot be used") + " (the reason is shown at the field)"
        except Exception as exc:  # never a traceback in the page
            problem = f"{type(exc).__name__}: {exc}"
            network_slot.error(plain(problem))
    if seeds_problem is not None:
        training_slot.error(plain(seeds_problem))
        problem = problem or seeds_problem

    if custom:
        variant = (networks.probe(network.key, probe_shape, probe_classes, tuple(bn_off),
                                  tuple(layer_rates)) if network_problem is None else None)
        layers = variant["layers"] if variant and variant["ok"] else []
        rows = [LayerRow(layer[0], layer[1], tuple(layer[3] or ()) if len(layer) > 3 else (),
                         layer[2]) for layer in layers]
        total = variant["params"] if variant and variant["ok"] else 0
        all_on = base_probe["params"] if base_probe and base_probe.get("ok") else total
    else:
        rows = summary_rows(preset, tuple(bn), shape, classes, dropout)
        total = sum(r.params for r in rows)
        all_on = sum(r.params for r in summary_rows(preset, (True,) * len(bn), shape, classes))
    st.subheader("Model summary")
    m1, m2 = st.columns(2)
    m1.metric("Total parameters", f"{total:,}",
              delta=f"{total - all_on:,} vs all BN on" if total != all_on else None,
              delta_color="off")
    m2.metric("Input", f"{shape[0]}×{shape[1]}×{shape[2]}", help=f"{classes} classes")
    table = pd.DataFrame({
        "layer": [r.name for r in rows],
        "type": [SHORT_KINDS.get(r.kind, r.kind) for r in rows],
        "output": ["(" + ", ".join(map(str, r.output_shape)) + ")" if r.output_shape
                   else "" for r in rows],
        "params": [f"{r.params:,}" for r in rows],
    })
    # A static table: every layer shows (its height follows the rows), none hides behind a
    # scroll bar, and its text wraps on a narrow screen instead of being cut.
    st.table(table, hide_index=True)
    if info is None:
        st.caption("Input shape " + (f"of the last dataset that could be used ({plain(shown_from)})"
                                     if shown_from else "of the network's default dataset")
                   + " until the dataset above can be used.")

st.divider()
label = "Launch run"
if config is not None and seeds_problem is None and int(seeds) > 1:
    label = f"Launch {int(seeds)} runs (seeds 0–{int(seeds) - 1})"
if problem is not None or config is None:
    row = st.container(horizontal=True, vertical_alignment="center")  # the reason beside it
    row.button(label, type="primary", key="launch", disabled=True)
    row.error(f"Cannot launch: {plain(problem)}", width="stretch")
else:
    configs = with_seeds(config, int(seeds))
    done, pending = same_config_runs(engine, [c.config_hash for c in configs])
    if done:
        run = done[0]
        st.info(f"This exact config already has {plural(len(done), 'completed run')}, e.g. run "
                f"#{run.id} with test accuracy {pct(run.test_accuracy)}. Launching again adds "
                "another repeat.")
        st.page_link(page_file("runs"), label=f"Open run #{run.id}", icon=":material/monitoring:",
                     query_params={"run": str(run.id)})
    if pending:
        st.info("This exact config is already " + ", ".join(f"{r.status} (#{r.id})"
                                                            for r in pending) + ".")
    if st.button(label, type="primary", key="launch"):
        try:
            ids = submit(engine, configs, name=run_name)
        except ConfigError as exc:  # the folder changed since the check above, say
            st.error(f"Cannot launch: {plain(exc)}")
        else:
            st.session_state["launched"] = (config.config_hash, ids)
    launched_hash, ids = st.session_state.get("launched", (None, []))
    if launched_hash == config.config_hash:  # only while the form still shows what was launched
        st.success(f"Queued {'run' if len(ids) == 1 else 'runs'} "
                   f"{', '.join(f'#{i}' for i in ids)}: {plain(config.label)} on "
                   f"{plain(config.dataset)}.")
        st.page_link(page_file("runs"), label="Watch it train on the Runs page",
                     icon=":material/monitoring:", query_params={"run": str(ids[0])})
