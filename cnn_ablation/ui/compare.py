"""Compare: overlaid curves of chosen runs, what differs in their configs, metrics vs a baseline."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cnn_ablation.config import RunConfig, config_diff
from cnn_ablation.ui.common import engine_or_stop, worker_banner
from cnn_ablation.ui.figures import curves_figure
from storage.read_models import epochs_frame, runs_frame
from storage.status import RunStatus

engine = engine_or_stop()
worker_banner(engine)
st.title("Compare runs")

frame = runs_frame(engine)
if frame.empty:
    st.info("No runs to compare yet. Launch two variants on the **New run** page.")
    st.page_link("cnn_ablation/ui/new_run.py", label="New run", icon=":material/science:")
    st.stop()

records = {r["id"]: r for r in frame.to_dict("records")}
variants = frame.groupby("variant_hash", sort=False).agg(
    label=("label", "first"), dataset=("dataset", "first"), ids=("id", list))
pick, group = st.columns([3, 2])
with group:
    variant = st.selectbox(
        "…or add all runs of one config", [""] + list(variants.index), key="variant",
        format_func=lambda v: "choose a config" if not v else
        f"{variants.loc[v, 'label']} · {variants.loc[v, 'dataset']} ({len(variants.loc[v, 'ids'])} runs)")
    if st.button("Add its runs", disabled=not variant, key="add_variant"):
        chosen = set(st.session_state.get("compare_ids", [])) | set(variants.loc[variant, "ids"])
        st.session_state["compare_ids"] = sorted(chosen)
with pick:
    default = frame[frame["status"] == RunStatus.COMPLETED]["id"].tolist()[-2:]
    st.session_state.setdefault("compare_ids", default)
    ids = st.multiselect("Runs", list(records), key="compare_ids",
                         format_func=lambda i: f"#{i} {records[i]['name'] or records[i]['label']}",
                         placeholder="pick two or more runs")
if not ids:
    st.info("Pick the runs to compare above.")
    st.stop()

labels = {i: f"#{i} {records[i]['label']}" for i in ids}
epochs = epochs_frame(engine, ids)
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
    rows = []
    for i in run_ids:
        r = records[i]
        e = epochs[epochs["run_id"] == i]
        best = e.loc[e["val_accuracy"].idxmax()] if e["val_accuracy"].notna().any() else None
        rows.append({
            "run": labels[i], "status": r["status"],
            "final val acc": r["final_val_accuracy"],
            "best val acc": r["best_val_accuracy"],
            "best epoch": None if best is None else int(best["epoch"]),
            "test acc": r["test_accuracy"], "params": r["params"],
        })
    table = pd.DataFrame(rows)
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

csv = epochs.merge(pd.DataFrame({"run_id": ids, "config": [records[i]["label"] for i in ids]}),
                   on="run_id").to_csv(index=False)
st.download_button("Download all epochs (CSV)", csv, file_name="epochs.csv", mime="text/csv",
                   key="download_csv")
