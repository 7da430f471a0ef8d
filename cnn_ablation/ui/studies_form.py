"""The Studies page's "Start a study" tab: the network (the chapter's or your own), the dataset
and every run setting, fixed or adaptive seeds, then the one-click studies and your own factors,
each with its cells, runs and how long it takes here; a button stores the study and queues its
runs. Only functions: nothing runs at import."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Literal

import streamlit as st
from sqlalchemy import Engine

from cnn_ablation.architecture import PRESETS
from cnn_ablation.config import (
    BUILTIN_DATASETS,
    MAX_SEEDS,
    METRICS,
    ConfigError,
    RunConfig,
    defaults,
)
from cnn_ablation.data import datasets
from cnn_ablation.data.arrays import DatasetUnavailable
from cnn_ablation.networks import registry as networks
from cnn_ablation.settings import settings
from cnn_ablation.studies import estimate as study_estimate
from cnn_ablation.studies import grid as study_grid
from cnn_ablation.studies.adaptive_rule import AdaptiveRule
from cnn_ablation.studies.factors import NETWORK_FACTORS, parse_levels
from cnn_ablation.studies.presets import STUDY_PRESETS, study_preset
from cnn_ablation.studies.spec import DEFAULT_SMALLEST_EFFECT, StudySpec
from cnn_ablation.ui.common import _engine, database_key, folder_within_roots, plain, roots_text
from cnn_ablation.ui.studies_state import CHOICE

DEFAULTS = defaults()


KEEP: Literal["session"] = "session"  # the form outlives a page switch, as New run's does


@st.cache_data(ttl=30, max_entries=64, show_spinner=False)
def estimate(url: str, spec_json: str) -> tuple[float | None, str]:
    """`study_estimate.estimate_seconds`, shared for 30 s: the form redraws on every keystroke and
    the estimate reads the recent runs' timings."""
    return study_estimate.estimate_seconds(_engine(url), StudySpec.from_dict(json.loads(spec_json)))


def estimate_text(engine: Engine, spec: StudySpec) -> str:
    seconds, basis = estimate(database_key(engine), spec.to_json())
    when = plain(basis) if seconds is None else f"{study_estimate.minutes_text(seconds)} ({plain(basis)})"
    text = f"{len(spec.cells())} cells × {spec.seeds} seeds = **{len(spec.runs())} runs**, {when}."
    rule = spec.adaptive
    if rule is not None:
        text += (f" That is round 1; its spread plans the rest (adding up to {rule.step} seed(s) "
                 f"per cell a round), up to {rule.max_seeds} seeds per cell "
                 f"({len(spec.cells()) * rule.max_seeds} runs at most).")
    return text


def dataset_choice(column) -> tuple[str, str | None]:
    """The dataset picked (a built-in one, or a folder under ABLATION_DATA_ROOTS) and, if it
    cannot be used, why not."""
    choices = [*BUILTIN_DATASETS, "folder:…"]
    choice = column.selectbox("Dataset", choices, key="study_dataset", persist_state=KEEP,
                              index=choices.index("fashion_mnist"))
    if choice != "folder:…":
        return choice, None
    roots = settings().data_roots
    path = column.text_input("Image folder (with train/<class>/ and test/<class>/)",
                             key="study_folder",
                             persist_state=KEEP, help="A folder under " + plain(roots_text(roots))
                             + " (ABLATION_DATA_ROOTS)")
    if not path.strip():
        return "folder:", "enter an image folder first"
    folder, refusal = folder_within_roots(path, roots)
    if folder is None:
        return "folder:", refusal
    return f"folder:{folder}", None


def network_layers(key: str, dataset: str) -> tuple[dict | None, str | None]:
    """Your own network's BatchNorm and Dropout layers on `dataset` (the probe, in a helper
    process: this page never imports TensorFlow), or why it cannot be used."""
    try:
        info = datasets.dataset_info(dataset)
        with st.spinner("Reading the network's layers…"):
            answer = networks.probe(key, info.shape, info.num_classes)
    except (ConfigError, DatasetUnavailable) as exc:
        return None, str(exc)
    return (answer, None) if answer["ok"] else (None, answer["error"])


def start_form(engine: Engine) -> None:
    """The tab, top to bottom: the network, the dataset and the run settings, seeds (fixed or
    adaptive), then `one_click` and `own_factors`. A setting that makes no valid config is said
    and the page stops there."""
    known = {n.key: n for n in networks.list_networks() if n.kind != "preset" or n.key == "seed"}
    study_network = st.selectbox(
        "Network", list(known), key="study_network", persist_state=KEEP,
        format_func=lambda k: known[k].title + ("" if known[k].kind == "preset"
                                                else f" ({known[k].kind})"),
        help="The chapter's network, or your own (a .keras file added on the New run page or "
             "in $ABLATION_HOME/networks, or a builder from ABLATION_NETWORK_PATHS): its "
             "BatchNorm and Dropout layers become the factors.")
    custom = known[study_network].kind != "preset"
    c1, c2, c3, c4 = st.columns(4)
    dataset, dataset_problem = dataset_choice(c1)
    epochs = c2.number_input("Epochs per run", value=10, min_value=1, step=1, key="study_epochs",
                             persist_state=KEEP)
    seeds = c3.number_input("Seeds per cell", value=3, min_value=1, max_value=MAX_SEEDS, step=1,
                            key="study_seeds",
                            persist_state=KEEP, help="3 or more give a confidence interval; "
                                                    "with adaptive seeds, the first round's")
    name = c4.text_input("Name", key="study_name",
                                 persist_state=KEEP, placeholder="e.g. BN ablation, 10 epochs")
    s1, s2, s3, s4 = st.columns(4)
    batch = s1.number_input("Batch size", value=DEFAULTS.batch_size, min_value=1, step=8,
                            key="study_batch_size", persist_state=KEEP)
    lr = s2.number_input("Learning rate (Adam)", value=DEFAULTS.learning_rate, step=0.0001,
                         format="%.5f", key="study_lr", persist_state=KEEP)
    val_split = s3.number_input("Validation split", value=DEFAULTS.val_split, step=0.05,
                                key="study_val_split",
                                persist_state=KEEP, help="Fraction of training images held out")
    limit = s4.number_input("Use only the first N training images (0 = all)", value=0, min_value=0,
                            step=1000, key="study_limit_train", persist_state=KEEP)
    j1, j2 = st.columns(2)
    metrics: list[str] = [m for m in METRICS if float(val_split) > 0 or m == "test_accuracy"]
    metric = j1.selectbox(
        "Primary metric (fixed now: the verdicts are for it)", metrics, key="study_metric_new",
                                                                        persist_state=KEEP,
        format_func=lambda m: METRICS[m],
        help="Chosen before any result is seen, so the verdicts cannot be picked to look good; "
             "the other metrics stay visible, labelled exploratory. Best val acc is the highest "
             "over epochs, picked after seeing them: optimistic.")
    smallest = j2.number_input(
        "Smallest change that matters (pp)", value=100 * DEFAULT_SMALLEST_EFFECT, min_value=0.01,
        max_value=99.0, step=0.5, key="study_smallest_pp", persist_state=KEEP,
        help="An interval that holds zero but reaches past ± this is called inconclusive, not "
             "within noise; seeds needed are for a change this size.")
    adaptive = st.toggle("Adaptive seeds", key="study_adaptive", persist_state=KEEP,
                         help="Instead of a fixed number of seeds: add seeds a round at a time "
                              "until every effect is measured precisely enough")
    rule: AdaptiveRule | None = None
    if adaptive:
        a1, a2, a3 = st.columns(3)
        target = a1.number_input("Plan seeds for every 95 % interval narrower than ± (pp)",
                                 value=1.0, min_value=0.01, max_value=99.0, step=0.1,
                                 key="study_target_pp", persist_state=KEEP)
        max_seeds = a2.number_input("… or at this many seeds per cell", value=10, min_value=2,
                                    max_value=MAX_SEEDS, step=1, key="study_max_seeds", persist_state=KEEP)
        step = a3.number_input("Seeds added per round", value=2, min_value=1, max_value=MAX_SEEDS,
                               step=1, key="study_seed_step", persist_state=KEEP)
        st.caption("Stein's two-stage rule: the first round's seed-to-seed spread alone plans how "
                   "many seeds each cell gets, and the intervals use that spread, so their 95 % "
                   "holds exactly. It stops on precision only, never on significance: stopping "
                   "as soon as an interval excludes zero would make chance differences look "
                   "real (optional stopping).")
    try:
        if dataset_problem is not None:
            raise ConfigError("dataset", dataset, dataset_problem)
        common = dict(dataset=dataset, epochs=int(epochs), batch_size=int(batch),
                      learning_rate=float(lr), val_split=float(val_split),
                      limit_train=int(limit) or None)
        base = (RunConfig(network=study_network, **common) if custom  # type: ignore[arg-type]
                else RunConfig(**common))  # type: ignore[arg-type]
        if adaptive:
            rule = AdaptiveRule(half_width=float(target) / 100, max_seeds=int(max_seeds),
                                step=int(step))
    except ConfigError as exc:
        st.error(plain(exc))
        st.stop()

    judging = {"metric": metric, "smallest_effect": float(smallest) / 100}
    one_click(engine, custom, base, seeds, rule, name, judging)
    own_factors(engine, custom, study_network, dataset, base, seeds, rule, name, judging)


PENDING = "study_preset_pending"  # the one-click study waiting for its confirmation
STARTED = "study_started_flash"  # what the last start queued, said on the next run


def one_click(engine: Engine, custom: bool, base: RunConfig, seeds: int,
              rule: AdaptiveRule | None, name: str, judging: dict) -> None:
    """The ready-made studies (the chapter's network only), a button each; a button asks first
    (how many runs, about how long), since one click queues hours of training."""
    st.markdown("##### One click")
    if started := st.session_state.pop(STARTED, None):
        st.success(started)
    if custom:
        st.caption("The one-click studies are the chapter's network's; for your own network "
                   "pick its switches under **Your own factors**.")
    specs = {}
    for key, title in () if custom else STUDY_PRESETS.items():
        left, right = st.columns([1, 3])
        try:
            spec = replace(study_preset(key, base, int(seeds), rule), **judging)
            spec.check_new()
        except ConfigError as exc:
            right.error(plain(exc))
            continue
        specs[key] = spec
        if left.button(title.split(":")[0], key=f"preset_{key}", width="stretch"):
            st.session_state[PENDING] = key
        right.markdown(f"{title}. " + estimate_text(engine, spec))
    pending = st.session_state.get(PENDING)
    if pending in specs:
        confirm_preset(engine, pending, specs[pending], name)
    elif pending is not None:  # its settings became invalid meanwhile: nothing to confirm
        st.session_state.pop(PENDING, None)


def _forget_pending() -> None:
    st.session_state.pop(PENDING, None)


@st.dialog("Start this study?", on_dismiss=_forget_pending)  # closed with x or Esc: not started
def confirm_preset(engine: Engine, key: str, spec: StudySpec, name: str) -> None:
    title = STUDY_PRESETS[key]
    st.markdown(f"**{plain(title)}**  \n" + estimate_text(engine, spec))
    st.caption("Every run is queued now; the worker trains them one after another. You can "
               "cancel the study from **Results** at any time.")
    go, back = st.columns(2)
    if go.button("Queue the runs", type="primary", key="preset_confirm", width="stretch"):
        st.session_state.pop(PENDING, None)
        try:
            study_id, queued = study_grid.create(engine, spec, name or title.split(":")[0])
        except ConfigError as exc:  # a name too long, a dataset that is not here, ...
            st.error(plain(exc))
            return
        st.session_state[CHOICE] = study_id
        st.session_state[STARTED] = (f"Study #{study_id} started: {len(queued)} runs queued. "
                                     "See **Results**.")
        st.rerun()
    if back.button("Not now", key="preset_cancel", width="stretch"):
        st.session_state.pop(PENDING, None)
        st.rerun()


def own_factors(engine: Engine, custom: bool, study_network: str, dataset: str, base: RunConfig,
                seeds: int, rule: AdaptiveRule | None, name: str, judging: dict) -> None:
    """Your own factors: BatchNorm switches (or your network's BatchNorm layers), levels of
    dropout (or of your network's Dropout layers), learning rate and batch size, the design."""
    st.markdown("##### Your own factors")
    positions = PRESETS["seed"].bn_positions
    f1, f2, f3 = st.columns([2, 2, 1])
    layers: dict | None = None
    layers_problem: str | None = None
    layer_levels: list[tuple[str, str]] = []  # (dropout:LAYER, its levels as typed)
    if custom:
        layers, layers_problem = network_layers(study_network, dataset)
    if custom and layers is None:
        f1.error(f"**This network cannot be used here.** {plain(layers_problem)}")
        bn_factors: list[str] = []
    elif custom:
        assert layers is not None
        channels = {f"bn:{b['name']}": b["channels"] for b in layers["batchnorm"]}
        bn_factors = f1.multiselect(
            "BatchNorm layers (on/off)", list(channels), key="study_net_bn_factors", persist_state=KEEP,
            format_func=lambda f: f"{f[3:]} ({channels[f]} channels)",
            help="Each one a factor: that BatchNorm on, or switched off (an identity).")
        for layer in layers["dropout"]:
            layer_levels.append((f"dropout:{layer['name']}", f2.text_input(
                f"Rates of Dropout {layer['name']} (comma-separated, empty = fixed at "
                f"{layer['rate']:g})", key=f"study_net_drop_{layer['name']}", persist_state=KEEP,
                placeholder="0.1, 0.3")))
        if not layers["dropout"]:
            f2.caption("This network has no Dropout layer.")
    else:
        bn_factors = f1.multiselect("BatchNorm switches (on/off)",
                                    [f"bn_{p}" for p in positions], key="study_bn_factors",
                                                                    persist_state=KEEP)
    dropout_levels = "" if custom else f2.text_input(
        "Dropout levels (comma-separated, empty = fixed at 0.5)", key="study_dropout_levels",
                                                                  persist_state=KEEP,
        placeholder="0, 0.25, 0.5")
    design = f3.radio("Design", ["full", "ofat"], key="study_design", persist_state=KEEP,
                      format_func=lambda d: {"full": "full factorial",
                                             "ofat": "one at a time"}[d])
    g1, g2, _ = st.columns([2, 2, 1])
    lr_levels = g1.text_input("Learning rate levels (optional)", key="study_lr_levels", persist_state=KEEP,
                              placeholder="0.0005, 0.001")
    batch_levels = g2.text_input("Batch size levels (optional)", key="study_batch_levels", persist_state=KEEP,
                                 placeholder="32, 128")
    factors: dict[str, tuple] = {f: (True, False) for f in bn_factors}
    problem = None
    for factor, text in (("dropout", dropout_levels), *layer_levels,
                         ("learning_rate", lr_levels), ("batch_size", batch_levels)):
        if text.strip():
            try:
                factors[factor] = parse_levels(factor, text)
            except ConfigError as exc:
                problem = str(exc)
    if problem:
        st.error(plain(problem))
    elif factors:
        try:
            spec = StudySpec(base, factors, design, int(seeds), adaptive=rule, **judging)
            spec.check_new()
            st.markdown(estimate_text(engine, spec))
            if st.button("Start this study", type="primary", key="start_custom"):
                with st.spinner("Checking every cell…" if not custom else
                                "Checking every cell with Keras (a helper process)…"):
                    study_id, queued = study_grid.create(engine, spec, name or "custom study")
                st.session_state[CHOICE] = study_id
                st.success(f"Study #{study_id} started: {len(queued)} runs queued.")
        except ConfigError as exc:
            st.error(plain(exc))
    elif custom and layers is not None:
        st.caption("Pick at least one BatchNorm layer or give a Dropout layer's rates. "
                   f"Factors of your own network: {plain(NETWORK_FACTORS)}.")
    elif not custom:
        st.caption("Pick at least one switch or give dropout levels.")
