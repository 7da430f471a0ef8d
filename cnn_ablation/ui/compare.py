"""Compare: overlaid curves of chosen runs, what differs in their configs, metrics vs a baseline.

The selection lives in the URL (`?runs=3,5,8`): a reload or a pasted link shows the same runs."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from cnn_ablation.config import RunConfig, config_diff
from cnn_ablation.storage import listings, lookups, polling
from cnn_ablation.storage.curves import EPOCH_CACHE
from cnn_ablation.storage.run_filters import RunFilter
from cnn_ablation.storage.status import RunStatus
from cnn_ablation.ui import common
from cnn_ablation.ui.common import (
    chart_controls,
    engine_or_stop,
    keep,
    plural,
    restore,
    step_frame,
    worker_banner,
)
from cnn_ablation.ui.figures import curves_figure, missing_runs

URL_KEY = "runs"  # ?runs=3,5,8


def run_name(record: dict) -> str:
    """How a run is named in the legend, the tables and the pickers here: its name when it has
    one, else its config with its seed (runs of one config differ only in that)."""
    name = str(record.get("name") or "").strip()
    return name if name else f"{record['label']} · seed {record['seed']}"


def variant_text(variant: dict) -> str:
    """A config in the "all runs of one config" picker: two configs can share a label (they
    differ in the learning rate, say), so its runs' ids say which it is."""
    first, last, n = int(variant["first"]), int(variant["last"]), int(variant["runs"])
    ids = f"run #{first}" if n == 1 else f"runs #{first}–#{last}" if last - first + 1 == n \
        else f"runs #{first}…#{last}"
    return f"{variant['label']} · {variant['dataset']} · {ids} ({plural(n, 'run')})"


def ids_from_url() -> tuple[list[int] | None, str | None]:
    """The run ids in the URL (None if it names none) and what was wrong with it, if anything."""
    text = st.query_params.get(URL_KEY)
    if text is None:
        return None, None
    ids: list[int] = []
    for part in str(text).split(","):
        part = part.strip().lstrip("#")
        if not part:
            continue
        if not re.fullmatch(r"[0-9]{1,18}", part):  # not isdigit(): int("²") fails
            return None, f"The link's runs={text!r} is not a list of run ids such as runs=3,5,8."
        if int(part) not in ids:
            ids.append(int(part))
    return ids, None


engine = engine_or_stop()
worker_banner(engine)
st.title("Compare runs")

url = common.database_key(engine)
token = polling.change_token(engine)
if not token.any_runs:
    st.info("No runs to compare yet. Launch two variants on the **New run** page.")
    st.page_link(common.page_file("new_run"), label="New run", icon=":material/science:")
    st.stop()

# The pickers' options come from caches shared by every session, read again only when runs are
# added or deleted: the newest runs (common.PICKER_RUNS) and every config; a run chosen otherwise
# (a link, a config's runs, the Runs page's Compare) joins them. Only the chosen runs are read in
# full, and only their epochs.
options = common.run_labels(url, token.runs_version)
variants = {v["variant_hash"]: v for v in common.variants(url, token.runs_version)}
pick, group = st.columns([3, 2])
with group:
    variant = st.selectbox(
        "…or add all runs of one config", ["", *variants], key="variant",
        format_func=lambda v: "choose a config" if not v else variant_text(variants[v]))
    if st.button("Add its runs", disabled=not variant, key="add_variant"):
        chosen = set(st.session_state.get("compare_ids", [])) | set(
            lookups.variant_run_ids(engine, variant))
        st.session_state["compare_ids"] = sorted(chosen)
url_ids, url_problem = ids_from_url()
with pick:
    # The URL wins when it names runs other than those this session last wrote into it (a reload,
    # a pasted link, the browser's back button); otherwise the session's own choice is kept.
    from_url = url_ids is not None and url_ids != st.session_state.get("_compare_url")
    if from_url:
        st.session_state["compare_ids"] = url_ids
    restore("compare_ids", None)
    if st.session_state["compare_ids"] is None:
        st.session_state["compare_ids"] = lookups.latest_ids(engine, RunStatus.COMPLETED)
    options = dict(sorted({**options, **common.labels_of(
        engine, [i for i in st.session_state["compare_ids"] if i not in options])}.items()))
    if from_url and (gone := [i for i in url_ids or [] if i not in options]):
        st.warning("Not in this database (deleted, or a link from elsewhere): "
                   + ", ".join(f"#{i}" for i in gone))
    st.session_state["compare_ids"] = [i for i in st.session_state["compare_ids"] if i in options]
    ids = st.multiselect("Runs", list(options), key="compare_ids", format_func=lambda i: options[i],
                         placeholder="pick two or more runs",
                         help=f"The newest {common.PICKER_RUNS:,} runs, and any run chosen "
                              "otherwise: select older ones on the Runs page (Compare), or add "
                              "all runs of one config")
    keep("compare_ids")
    if url_problem:
        st.warning(url_problem)
shown = ",".join(str(i) for i in ids)
st.session_state["_compare_url"] = list(ids)
if st.query_params.get(URL_KEY) != shown:
    if ids:
        st.query_params[URL_KEY] = shown
    elif URL_KEY in st.query_params:
        del st.query_params[URL_KEY]
if not ids:
    st.info("Pick the runs to compare above.")
    st.stop()

records = {r["id"]: r for r in listings.run_rows(
    engine, RunFilter(ids=tuple(ids)), columns=[*listings.LIST_COLUMNS, "config_json"])}
ids = [i for i in ids if i in records]  # a run deleted since the options were read
curve_labels = {i: run_name(records[i]) for i in ids}
labels = {i: f"#{i} {run_name(records[i])}" for i in ids}
epochs, _ = EPOCH_CACHE.read(engine, ids)
options_chosen = chart_controls("compare_chart")
steps = step_frame(engine, ids, options_chosen)
st.plotly_chart(curves_figure(epochs, curve_labels, height=420, options=options_chosen,
                              steps=steps),
                key="compare_curves", config={"displaylogo": False})
left_out = missing_runs(epochs, curve_labels, options_chosen, steps)
st.caption(f"Comparing {plural(len(ids), 'run')}. Train dashed, validation solid, sampled "
           "training steps dotted; one colour per run, the same on every page."
           + (" Not on the step axis (no sampled steps): "
              + ", ".join(f"#{i}" for i in left_out) + "." if left_out else ""))

configs = {i: RunConfig.from_json(records[i]["config_json"]) for i in ids}
differ = config_diff(list(configs.values()))
st.subheader("What differs")
if differ:
    st.markdown("Fields that differ: " + ", ".join(f"**{k}**" for k in differ))
    diff_rows = [{"run": labels[i], **{k: str(configs[i].to_dict()[k]) for k in differ}}
                 for i in ids]
    st.dataframe(pd.DataFrame(diff_rows), hide_index=True)
else:
    st.caption("The configs are identical: these are repeats of one variant (seed included).")

st.subheader("Results")
baseline = st.selectbox("Baseline run", ids, format_func=lambda i: labels[i], key="baseline")


def results_table(run_ids: list[int], base: int) -> pd.DataFrame:
    valid = epochs.dropna(subset=["val_accuracy"])
    best_rows = valid.loc[valid.groupby("run_id")["val_accuracy"].idxmax()] if len(valid) else valid
    best_epoch = dict(zip(best_rows["run_id"], best_rows["epoch"], strict=True))
    table = pd.DataFrame([{
        "run": labels[i], "status": records[i]["status"],
        "final val acc": records[i]["final_val_accuracy"],
        "best val acc": records[i]["best_val_accuracy"],
        "best epoch": int(best_epoch[i]) if i in best_epoch else None,
        "test acc": records[i]["test_accuracy"], "params": records[i]["params"],
    } for i in run_ids])
    base_row = table[table["run"] == labels[base]].iloc[0]
    for column in ("final val acc", "best val acc", "test acc"):
        delta = pd.to_numeric(table[column]) - pd.to_numeric(base_row[column])
        table[f"Δ {column}"] = 100 * delta  # percentage points
    for column in ("final val acc", "best val acc", "test acc"):
        table[column] = 100 * pd.to_numeric(table[column])
    return table


table = results_table(ids, baseline)
# Each metric beside its Δ, the two the study judges first: on an 800 px window the run and both
# pairs show (about 720 px); best val acc, its epoch, status and params follow.
RESULT_ORDER = ["run", "final val acc", "Δ final val acc", "test acc", "Δ test acc",
                "best val acc", "Δ best val acc", "best epoch", "status", "params"]
pct_col = st.column_config.NumberColumn(format="%.1f %%", width=90)
st.dataframe(table, hide_index=True, placeholder="–", column_order=RESULT_ORDER, column_config={
    "run": st.column_config.TextColumn(width=250),
    "final val acc": pct_col, "best val acc": pct_col, "test acc": pct_col,
    **{f"Δ {c}": st.column_config.NumberColumn(format="%+.1f pp", width=90)
       for c in ("final val acc", "best val acc", "test acc")},
    "params": st.column_config.NumberColumn(format="localized")})
st.caption("Δ columns: this run minus the baseline, in percentage points. One run per variant "
           "is one sample: compare repeats (Seeds on New run, or a Study) before trusting a gap.")


def csv_name(run_ids: list[int]) -> str:
    """`epochs-of-runs-3-5-7.csv`: what the file holds, and whose (at most 8 ids named)."""
    shown = "-".join(map(str, run_ids[:8])) + ("-and-more" if len(run_ids) > 8 else "")
    return f"epochs-of-runs-{shown}.csv"


def epochs_csv() -> str:
    """Every epoch of the chosen runs, made only when the button is clicked."""
    return common.epochs_csv(epochs, [records[i] for i in ids])


st.download_button(f"Download epochs of {plural(len(ids), 'run')} (CSV)", epochs_csv,
                   file_name=csv_name(ids), mime="text/csv", key="download_csv")
