"""New run: build a variant by switching layers on the drawn network, then launch it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cnn_ablation import datasets
from cnn_ablation.architecture import PRESETS, Conv, summary_rows
from cnn_ablation.config import BUILTIN_DATASETS, MAX_SEEDS, ConfigError, RunConfig
from cnn_ablation.launch import prepare, submit, with_seeds
from cnn_ablation.ui.common import engine_or_stop, pct, worker_banner
from storage.read_models import same_config_runs

DEFAULTS = RunConfig()

engine = engine_or_stop()
worker_banner(engine)

st.title("New run")
st.caption("Switch BatchNorm per layer and set dropout on the network below; the parameter count "
           "follows as you go. Launch queues the run; a background worker trains it.")


@st.cache_data(ttl=30, show_spinner=False)
def availability(name: str) -> datasets.Availability:
    return datasets.availability(name)


def dataset_label(name: str) -> str:
    state = availability(name)
    return f"{name} — {state.state}"


top = st.columns([1, 1, 1])
preset = top[0].selectbox("Network", list(PRESETS), format_func=lambda p: PRESETS[p].title,
                          key="preset")
choices = [d for d in BUILTIN_DATASETS] + ["folder:…"]
default_ds = "cifar10" if availability("cifar10").state == "ready" else "fashion_mnist"
dataset_choice = top[1].selectbox("Dataset", choices, index=choices.index(default_ds),
                                  format_func=lambda d: d if d == "folder:…" else dataset_label(d),
                                  key="dataset")
dataset = dataset_choice
if dataset_choice == "folder:…":
    path = top[1].text_input("Image folder (with train/<class>/ and test/<class>/)",
                             key="folder_path")
    dataset = f"folder:{path}" if path else "folder:"
run_name = top[2].text_input("Name (optional)", key="run_name",
                             placeholder="e.g. no BN in the middle")

state = availability(dataset) if dataset != "folder:" else None
if state is not None:
    note = f"Dataset **{dataset}**: {state.state} ({state.detail})"
    if state.state == "ready":
        st.caption(note)
    else:
        (st.warning if state.state == "needs download" else st.error)(note)

spec = PRESETS[preset]
left, right = st.columns([1, 1], gap="large")

with left:
    st.subheader("Network")
    bn: list[bool] = []
    dropout = DEFAULTS.dropout
    with st.container(border=True):
        st.markdown("**Input** · uint8 image, rescaled to [0, 1] inside the model")
    for layer in spec.hidden:
        with st.container(border=True):
            if isinstance(layer, Conv):
                what = (f"**{layer.name}** · Conv2D {layer.filters} filters "
                        f"{layer.kernel}×{layer.kernel}, stride {layer.stride}")
            else:
                what = f"Flatten → **{layer.name}** · Dense {layer.units} units"
            if not layer.bn_switch:
                st.markdown(what)
                continue
            text, switch = st.columns([2, 1], vertical_alignment="center")
            on = switch.toggle("BatchNorm", value=True, key=f"bn_{layer.name}")
            bn.append(on)
            chain = "→ BatchNorm → LeakyReLU" if on else "→ ~~BatchNorm~~ → LeakyReLU"
            text.markdown(f"{what}  \n{chain}")
            if getattr(layer, "dropout", False):
                dropout = st.slider("Dropout rate after dense_1", 0.0, 0.95, DEFAULTS.dropout,
                                    0.05, key="dropout",
                                    help="Fraction of dense_1's outputs zeroed at each step "
                                         "(the chapter uses 0.5). Allowed: [0, 1).")
    with st.container(border=True):
        st.markdown("**output** · Dense, one unit per class, softmax")

with right:
    st.subheader("Training")
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", value=DEFAULTS.epochs, step=1, key="epochs")
    batch = c2.number_input("Batch size", value=DEFAULTS.batch_size, step=8, key="batch_size")
    lr = c3.number_input("Learning rate (Adam)", value=DEFAULTS.learning_rate, step=0.0001,
                         format="%.5f", key="lr")
    seeds = c4.number_input("Seeds", value=1, min_value=1, max_value=MAX_SEEDS, step=1, key="seeds",
                            help="N repeats of this variant with seeds 0..N-1: the spread "
                                 "between them is the noise any effect must beat.")
    with st.expander("More settings"):
        m1, m2 = st.columns(2)
        val_split = m1.number_input("Validation split", value=DEFAULTS.val_split, step=0.05,
                                    key="val_split", help="Fraction of training images held out")
        limit = m2.number_input("Use only the first N training images (0 = all)", value=0,
                                step=1000, key="limit_train")

    config: RunConfig | None = None
    problem: Exception | None = None
    params: int | None = None
    try:
        config = RunConfig(preset=preset, dataset=dataset, bn=tuple(bn), dropout=float(dropout),
                           epochs=int(epochs), batch_size=int(batch), learning_rate=float(lr),
                           val_split=float(val_split), limit_train=int(limit) or None)
        config, params = prepare(config)
    except ConfigError as exc:
        problem = exc
    except datasets.DatasetUnavailable as exc:
        problem = exc

    info = None
    if config is not None:
        info = datasets.dataset_info(config.dataset, config.image_size)
    shape = info.shape if info else spec.input_shape
    classes = info.num_classes if info else 10
    rows = summary_rows(preset, tuple(bn), shape, classes, dropout)
    total = sum(r.params for r in rows)
    all_on = sum(r.params for r in summary_rows(preset, (True,) * len(bn), shape, classes))
    st.subheader("Model summary")
    m1, m2 = st.columns(2)
    m1.metric("Total parameters", f"{total:,}",
              delta=f"{total - all_on:,} vs all BatchNorm on" if total != all_on else None,
              delta_color="off")
    m2.metric("Input", f"{shape[0]}×{shape[1]}×{shape[2]}", help=f"{classes} classes")
    table = pd.DataFrame({
        "layer": [r.name for r in rows],
        "type": [r.kind for r in rows],
        "output shape": ["(" + ", ".join(map(str, r.output_shape)) + ")" for r in rows],
        "params": [r.params for r in rows],
    })
    st.dataframe(table, hide_index=True, height=min(38 + 35 * len(table), 560),
                 column_config={"params": st.column_config.NumberColumn(format="localized")})

st.divider()
if problem is not None or config is None:
    st.error(f"Cannot launch: {problem}")
else:
    configs = with_seeds(config, int(seeds))
    done, pending = same_config_runs(engine, [c.config_hash for c in configs])
    if done:
        run = done[0]
        st.info(f"This exact config already has {len(done)} completed run(s), e.g. run "
                f"#{run.id} with test accuracy {pct(run.test_accuracy)}. Launching again adds "
                "another repeat.")
        st.page_link("cnn_ablation/ui/runs.py", label=f"Open run #{run.id}", icon=":material/monitoring:",
                     query_params={"run": str(run.id)})
    if pending:
        st.info("This exact config is already " + ", ".join(f"{r.status} (#{r.id})"
                                                            for r in pending) + ".")
    label = f"Launch {len(configs)} runs (seeds 0–{len(configs) - 1})" if len(configs) > 1 \
        else "Launch run"
    if st.button(label, type="primary", key="launch"):
        ids = submit(engine, configs, name=run_name)
        st.session_state["launched"] = (config.config_hash, ids)
    launched_hash, ids = st.session_state.get("launched", (None, []))
    if launched_hash == config.config_hash:  # only while the form still shows what was launched
        st.success(f"Queued run(s) {', '.join(f'#{i}' for i in ids)}: {config.label} on "
                   f"{config.dataset}.")
        st.page_link("cnn_ablation/ui/runs.py", label="Watch it train on the Runs page",
                     icon=":material/monitoring:", query_params={"run": str(ids[0])})
