"""One run on the Runs page: its live status, progress and curves, BatchNorm's hint, its log and
TensorBoard folder, its name/tags/note form, its config, device and timing, and its diagnostics.

The Runs page (cnn_ablation/ui/runs.py) calls `show_run` for the run it has open and passes in
what belongs to the page: its action buttons (they open the page's dialogs) and the session-state
key of its next-run message. This module only defines functions: nothing runs at import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from cnn_ablation.run_report import duration_s, format_duration
from cnn_ablation.settings import settings
from cnn_ablation.storage import curves, runs
from cnn_ablation.storage.curves import EPOCH_CACHE
from cnn_ablation.storage.records import Run, RunNotFound
from cnn_ablation.storage.status import CancelMode, RunStatus
from cnn_ablation.ui import common, preload
from cnn_ablation.ui.common import CANCELLING, LIVE_S, pct, plain, shown_status
from cnn_ablation.ui.figures import ChartOptions, confusion_figure, curves_figure, layer_norms_figure

FEW_IMAGES = 10_000  # BatchNorm's hint: fewer training images than this, or
FEW_EPOCHS = 3  # at most this many epochs, and validation accuracy
LAG = 0.20  # more than this far below training accuracy
LOG_TAIL_BYTES = 64_000
HELD_HEIGHT = 600  # about the run's controls, figures and curves: the page below stays still


def show_run(engine: Engine, run_id: int, *, tag_options: list[str],
             actions: Callable[[Run], None], flash: str, charts: bool = True) -> None:
    """Everything below the table about one run: the live part (status, progress, curves, log),
    then the page's `actions` for it, its name/tags/note form, its config and, once completed,
    its diagnostics. `tag_options`: the tags the form offers; `flash`: the session-state key
    whose message the page toasts on its next run; `charts`: False while the page holds its
    charts until the browser has drawn the table (preload.py): `held_run` stands there."""
    run = runs.find_run(engine, run_id)
    if run is None:  # deleted elsewhere (the CLI) since the table was read
        st.info(f"Run #{run_id} no longer exists.")
        return
    # An active run's status, progress and curves redraw every LIVE_S, reading only its new
    # epochs (through the shared cache): a saved epoch is on screen within about a second.
    active = run.status in (RunStatus.QUEUED, RunStatus.RUNNING)
    if not charts:  # a new browser session: the table first, then the run (preload.py)
        st.fragment(held_run, run_every=LIVE_S)(run)
        return
    options = common.chart_controls("run_chart")
    live = st.fragment(live_run, run_every=LIVE_S if active else None)
    live(engine, run.id, run_state(run), options)
    actions(run)
    labels_form(engine, run, tag_options, flash)
    box = lazy_expander("Config, device and timing", "run_config_open")
    if box.open:
        box.json(run.config)
    box.caption(plain(f"{run.params or 0:,} parameters · device {run.device or '–'} on "
                      f"{run.host or '–'} · Keras on {run.backend or 'tensorflow'} · config "
                      f"hash {run.config_hash}"
                      + trained_on(run) + (f" · log {run.log_path}" if run.log_path else "")))
    if run.status == RunStatus.COMPLETED and (box := lazy_expander(
            "Diagnostics: per-layer gradient and weight norms, confusion matrix",
            "run_diagnostics_open")).open:
        report = run.test_report
        last = curves.last_epochs(engine, [run.id]).get(run.id, 0)
        stats = common.layer_stats(common.database_key(engine), run.id, last)
        with box:
            if len(stats):
                st.plotly_chart(layer_norms_figure(stats), key="run_norms")
            elif run.backend not in (None, "tensorflow"):
                st.caption(f"Per-layer gradient and weight norms are measured only on the "
                           f"TensorFlow backend; this run trained on {plain(run.backend)}.")
            if report:
                st.plotly_chart(confusion_figure(report), key="run_confusion")
                totals = [sum(r) for r in report["confusion"]]
                st.dataframe(pd.DataFrame({
                    "class": report["class_names"],
                    "accuracy": [100 * report["confusion"][i][i] / t if t else None
                                 for i, t in enumerate(totals)],
                    "images": totals}), hide_index=True,
                    column_config={"accuracy": st.column_config.NumberColumn(format="%.1f %%")})


def held_run(run: Run) -> None:
    """Where the run goes while the page holds it until the browser has drawn the table (a new
    browser session, preload.py): its heading and room for the rest, so nothing below the table
    asks for its code first (the curves' Plotly, the form's and the controls' widgets). The
    page is drawn again with the run once the browser says so, or, asked every LIVE_S, once
    preload.WAIT_S have passed without an answer."""
    if preload.charts_now():
        st.rerun()
    st.subheader(run_title(run))
    st.container(height=HELD_HEIGHT, border=False).caption("Its curves and details come next…")


def run_title(run: Run) -> str:
    return f"Run #{run.id}{' · ' + plain(run.name) if run.name else ''}: {plain(run.label)}"


def live_run(engine: Engine, run_id: int, drawn: tuple, options: ChartOptions) -> None:
    """The run's status, progress, curves and log. When its state changes (finished,
    cancelling, requeued, deleted) the whole page is drawn again: the actions below depend
    on it."""
    run = runs.find_run(engine, run_id)
    if run is None or run_state(run) != drawn:
        st.rerun()  # deleted, finished, cancelling, requeued: the actions change too
    assert run is not None
    epochs, st.session_state["epoch_rows_read"] = EPOCH_CACHE.read(engine, [run.id])
    status = shown_status(run.__dict__)
    st.subheader(run_title(run) + (f" · {CANCELLING}" if status == CANCELLING else ""))
    if run.tags or run.comment:
        st.caption(" · ".join(part for part in (
            ("tags: " + ", ".join(plain(t) for t in run.tags)) if run.tags else "",
            ("note: " + plain(run.comment)) if run.comment else "") if part))
    figures = st.container(horizontal=True, gap="large")  # wraps on a narrow screen
    best = pd.to_numeric(epochs["val_accuracy"], errors="coerce").max() if len(epochs) else None
    for label, value in (("Status", status), ("Epochs", f"{len(epochs)}/{run.epochs}"),
                         ("Best val acc", pct(best)), ("Test acc", pct(run.test_accuracy)),
                         ("Time", format_duration(duration_s(run.__dict__)) or "–")):
        figures.metric(label, value, width="content")
    where = phase_text(run)
    if where is not None:
        text = plain(where + (f" · {run.device}" if run.device else ""))
        if run.progress_batches and run.phase in ("training", "testing"):
            st.progress(min((run.progress_batch or 0) / run.progress_batches, 1.0), text=text)
        else:
            st.caption(text)
    elif run.status == RunStatus.QUEUED:
        st.info("Queued: waits for a free worker slot." + (
            f" It resumes after epoch {run.resume_epoch}." if run.resume_epoch else ""))
    if status == CANCELLING:
        if run.cancel_mode == CancelMode.NOW:
            st.warning(f"**{CANCELLING}** Asked to stop now: the epoch in progress is discarded; "
                       "the finished epochs stay.")
        else:
            st.warning(f"**{CANCELLING}** Asked to stop after the current epoch: that epoch is "
                       "kept, then the run ends as cancelled.")
    if run.error and run.status != RunStatus.COMPLETED:
        box = st.warning if run.status == RunStatus.CANCELLED else st.error
        box(f"**{run.status}**: {plain(run.error)}")
        if run.traceback and (trace := lazy_expander("Traceback", "run_traceback_open")).open:
            trace.code(run.traceback)
    if run.notes:
        st.caption("  \n".join(plain(line) for line in run.notes.splitlines() if line.strip()))
    if len(epochs):
        if hint := batchnorm_hint(run, epochs):
            st.info(hint, icon=":material/lightbulb:")
        steps = common.step_frame(engine, [run.id], options)
        st.plotly_chart(curves_figure(epochs, {run.id: run.label}, options=options, steps=steps),
                        key="run_curves", config={"displaylogo": False})
    else:
        st.caption(no_epochs_text(run))
    log_and_tensorboard(run)


def no_epochs_text(run: Run) -> str:
    """What stands where the curves would be when the run has no finished epoch."""
    if run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
        return "No finished epoch yet: the curves appear when the first epoch ends."
    ended = {RunStatus.CANCELLED: "it was cancelled", RunStatus.FAILED: "it failed"}.get(
        run.status, "it ended")
    return (f"No curves: {ended} before its first epoch ended, so it has no epochs to draw."
            + (" Retry queues it again." if run.status in (RunStatus.CANCELLED, RunStatus.FAILED)
               else ""))


def phase_text(run: Run) -> str | None:
    """Where a running run is, in words: `training: epoch 2 of 10, batch 300 of 1,407`,
    `testing: 4,000 of 10,000 images` (while testing, the progress counts images)."""
    if run.status != RunStatus.RUNNING:
        return None
    phase = run.phase or "starting"
    done, total = run.progress_batch or 0, run.progress_batches
    if phase == "testing" and total:
        return f"testing: {done:,} of {total:,} images"
    if phase == "training" and total:
        return f"training: epoch {run.progress_epoch} of {run.epochs}, batch {done:,} of {total:,}"
    if phase == "validating":
        return f"validating: epoch {run.progress_epoch} of {run.epochs}"
    return phase


def run_state(run: Run) -> tuple:
    """What the actions below the curves depend on: when it changes, they are drawn again."""
    return run.status, run.cancel_requested, run.cancel_mode


def batchnorm_hint(run: Run, epochs: pd.DataFrame) -> str | None:
    """One line beside the curves when a run with BatchNorm on trained on few images or few
    epochs and its validation accuracy lags training by more than LAG: why that happens."""
    config = run.config
    if config.get("network") is not None or not any(config.get("bn") or []):
        return None
    last = epochs.sort_values("epoch").iloc[-1]
    train = pd.to_numeric(last.get("accuracy"), errors="coerce")
    val = pd.to_numeric(last.get("val_accuracy"), errors="coerce")
    if pd.isna(train) or pd.isna(val) or train - val <= LAG:
        return None
    images = training_images(config)
    done = len(epochs)
    few_images = images is not None and images < FEW_IMAGES
    if not few_images and done > FEW_EPOCHS:
        return None
    trained_on = f"{done} epoch{'s' if done != 1 else ''}" + (
        f" on {images:,} training images" if images is not None else "")
    return (f"Validation accuracy ({pct(val)}) is {100 * (train - val):.0f} points below "
            f"training ({pct(train)}) after {trained_on}. With BatchNorm on, validation uses "
            "BatchNorm's moving mean and variance, which have not settled after so few steps; "
            "train on more images or for more epochs, or compare with BatchNorm off.")


def training_images(config: dict[str, Any]) -> int | None:
    """How many images a run trained on (after its limit and validation split); None where
    that is not known without reading the data (a folder without a limit, a broken name)."""
    from cnn_ablation.data.datasets import dataset_info

    dataset = str(config.get("dataset", ""))
    limit = config.get("limit_train")
    try:
        total = None if dataset.startswith("folder:") else dataset_info(dataset).train_size
    except Exception:  # a dataset name this version does not know: no hint, no error
        return None
    sizes = [int(n) for n in (limit, total) if n]
    if not sizes:
        return None
    n = min(sizes)
    return int(n - round(n * float(config.get("val_split") or 0.0)))


def log_and_tensorboard(run: Run) -> None:
    """The run's log, read again with the run (the live part) while its expander is open, and
    its TensorBoard folder."""
    if not (box := lazy_expander("Log and TensorBoard", "run_log_open")).open:
        return
    logdir = settings().tensorboard_dir(run.id)
    with box:
        tail = log_tail(run.log_path)
        if run.log_path:
            st.caption(f"Log file: {plain(run.log_path)} (last 200 lines, follows the run)")
        if tail:
            st.code(tail, language=None, height=300)
        else:
            st.caption("No log yet: it starts when a worker takes the run.")
        if run.backend not in (None, "tensorflow"):  # written with tf.summary: TensorFlow only
            st.caption(f"No TensorBoard files: they are written only when a run trains on the "
                       f"TensorFlow backend, and this one trained on {plain(run.backend)}. Its "
                       "epochs and steps are all in this page's curves and in the database.")
            return
        st.caption(f"TensorBoard logdir: {plain(logdir)}"
                   + ("" if Path(logdir).exists() else " (not written yet)")
                   + ". Open it with:")
        st.code(f"tensorboard --logdir {logdir}", language="bash")


def lazy_expander(label: str, key: str) -> Any:
    """A collapsed expander that knows whether it is open (`.open`; Streamlit reruns when it
    opens or closes, and `key` keeps it open from run to run): what is costly goes in only while
    it is open. A closed expander's content is still drawn: the first visit to a run made the
    browser fetch and compile the code view's and Plotly's JavaScript (1.5 and 4.7 MB) for
    charts nobody saw, before the table above showed, and the server read the log every second
    for nobody."""
    return st.expander(label, key=key, on_change="rerun")


def log_tail(path: str | None, lines: int = 200) -> str | None:
    """The last `lines` lines of a run's log (at most LOG_TAIL_BYTES read); None if unreadable,
    or if the path the database holds is not a file under `$ABLATION_HOME/logs` (symlinks
    resolved): a row pointing at /proc/self/environ must not show the dashboard's environment."""
    if not path:
        return None
    logs = (settings().home / "logs").resolve()
    try:
        if not Path(path).resolve().is_relative_to(logs):
            return None
    except (OSError, RuntimeError):
        return None
    try:
        with open(path, "rb") as log:
            log.seek(0, 2)
            size = log.tell()
            log.seek(max(0, size - LOG_TAIL_BYTES))
            data = log.read()
    except OSError:
        return None
    text = data.decode("utf-8", "replace").splitlines()
    if size > LOG_TAIL_BYTES:
        text = text[1:]  # a partial first line
    return "\n".join(text[-lines:])


def labels_form(engine: Engine, run: Run, tag_options: list[str], flash: str) -> None:
    """Rename the run, set its tags and its note (storage.runs.update_labels); a value that is
    not allowed is refused next to the form, naming the field."""
    with st.expander("Name, tags and note"), st.form(key=f"labels_{run.id}", border=False):
        name = st.text_input("Run name", value=run.name, key=f"label_name_{run.id}")
        tags = st.multiselect("Tags of this run", sorted(set(tag_options) | set(run.tags)),
                              default=list(run.tags), accept_new_options=True,
                              key=f"label_tags_{run.id}",
                              placeholder="type a tag and press Enter",
                              help="Letters, digits and _ . : - (stored lower-case)")
        comment = st.text_area("Note", value=run.comment or "", key=f"label_comment_{run.id}",
                               help="Free text: what you tried, what you saw")
        if st.form_submit_button("Save", icon=":material/save:"):
            try:
                runs.update_labels(engine, run.id, name=name, tags=tags, comment=comment)
            except (ValueError, RunNotFound) as exc:
                st.error(plain(exc))
                return
            common.runs_page.clear()  # names and tags show in the table: read it again
            st.session_state[flash] = f"Saved the name, tags and note of run #{run.id}"
            st.rerun()


def trained_on(run: Run) -> str:
    """" · trained on 14 of 14 images (files 3f2a…)": what the run's process recorded it read."""
    facts = (run.environment or {}).get("dataset")
    if not facts:
        return ""
    digest = f" (files {facts['digest'][:12]}…)" if facts.get("digest") else ""
    return f" · trained on {facts['used_images']:,} of {facts['train_images']:,} images{digest}"
