"""Compare: overlaid curves of chosen runs, what differs in their configs, metrics vs a baseline."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cnn_ablation.config import RunConfig, config_diff
from cnn_ablation.ui import common
from cnn_ablation.ui.common import engine_or_stop, worker_banner
from cnn_ablation.ui.figures import curves_figure
from storage import read_models
from storage.read_models import EPOCH_CACHE, RunFilter
from storage.status import RunStatus

engine = engine_or_stop()
worker_banner(engine)
st.title("Compare runs")

url = common.database_key(engine)
token = read_models.change_token(engine)
if token.runs == 0:
    st.info("No runs to compare yet. Launch two variants on the **New run** page.")
    st.page_link("cnn_ablation/ui/new_run.py", label="New run", icon=":material/science:")
    st.stop()

# The pickers' options come from caches shared by every session, read again only when runs are
# added or deleted; only the chosen runs are read in full, and only their epochs.
options = common.run_labels(url, token.runs_version)
variants = {v["variant_hash"]: v for v in common.variants(url, token.runs_version)}
pick, group = st.columns([3, 2])
with group:
    variant = st.selectbox(
        "…or add all runs of one config", ["", *variants], key="variant",
        format_func=lambda v: "choose a config" if not v else
        f"{variants[v]['label']} · {variants[v]['dataset']} ({variants[v]['runs']} runs)")
    if st.button("Add its runs", disabled=not variant, key="add_variant"):
        chosen = set(st.session_state.get("compare_ids", [])) | set(
            read_models.variant_run_ids(engine, variant))
        st.session_state["compare_ids"] = sorted(chosen)
with pick:
    if "compare_ids" not in st.session_state:
        st.session_state["compare_ids"] = read_models.latest_ids(engine, RunStatus.COMPLETED)
    st.session_state["compare_ids"] = [i for i in st.session_state["compare_ids"] if i in options]
    ids = st.multiselect("Runs", list(options), key="compare_ids", format_func=lambda i: options[i],
                         placeholder="pick two or more runs")
if not ids:
    st.info("Pick the runs to compare above.")
    st.stop()

records = {r["id"]: r for r in read_models.run_rows(
    engine, RunFilter(ids=tuple(ids)), columns=[*read_models.LIST_COLUMNS, "config_json"])}
ids = [i for i in ids if i in records]  # a run deleted since the options were read
labels = {i: f"#{i} {records[i]['label']}" for i in ids}
epochs, _ = EPOCH_CACHE.read(engine, ids)
st.plotly_chart(curves_figure(epochs, labels, height=420), key="compare_curves",
                config={"displaylogo": False})
st.caption("Train dashed, validation solid; one colour per run.")

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
pp = st.column_config.NumberColumn(format="%.1f %%")
st.dataframe(table, hide_index=True, placeholder="–", column_config={
    "final val acc": pp, "best val acc": pp, "test acc": pp,
    **{f"Δ {c}": st.column_config.NumberColumn(format="%+.1f pp")
       for c in ("final val acc", "best val acc", "test acc")},
    "params": st.column_config.NumberColumn(format="localized")})
st.caption("Δ columns: this run minus the baseline, in percentage points. One run per variant "
           "is one sample: compare repeats (Seeds on New run, or a Study) before trusting a gap.")


def epochs_csv() -> str:
    """Every epoch of the chosen runs, made only when the button is clicked."""
    names = pd.DataFrame({"run_id": ids, "config": [records[i]["label"] for i in ids]})
    return epochs.merge(names, on="run_id").to_csv(index=False)


st.download_button("Download all epochs (CSV)", epochs_csv, file_name="epochs.csv",
                   mime="text/csv", key="download_csv")
