"""Curves: a run's series as pages draw them: epoch rows, per-layer norms and sampled steps,
each read only past what a caller already holds, and `EPOCH_CACHE`, one size-bounded cache shared
by every session of the process, keyed by run and last epoch, that reads only epochs it does not
hold yet. pandas is imported only by the functions that return frames."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Select, and_, func, or_, select

from cnn_ablation.storage.engine import rows_as_dicts, session_scope
from cnn_ablation.storage.models import EpochMetricRow, LayerStatRow, StepMetricRow

if TYPE_CHECKING:
    import pandas as pd


EPOCH_COLUMNS = ["run_id", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]


LAYER_STAT_COLUMNS = ["run_id", "epoch", "layer", "grad_norm", "weight_norm"]


# --- epochs and per-layer norms --------------------------------------------------------------------
def _rows_after(table: Any, columns: Sequence[str], position: Any, run_ids: Sequence[int],
                after: dict[int, int] | None = None) -> Select[Any]:
    """`columns` of a per-run series table (epochs, sampled steps) for `run_ids`, ordered by run
    and `position`; with `after`, only rows past `after[run_id]` (through the table's
    (run_id, position) index): what a refresh has not drawn yet."""
    query = select(*[getattr(table, c) for c in columns]).where(table.run_id.in_(run_ids))
    if after:
        query = query.where(or_(*[and_(table.run_id == rid, position > after.get(rid, 0))
                                  for rid in run_ids]))
    return query.order_by(table.run_id, position)


def _epochs_query(run_ids: Sequence[int], after: dict[int, int] | None = None) -> Select[Any]:
    return _rows_after(EpochMetricRow, EPOCH_COLUMNS, EpochMetricRow.epoch, run_ids, after)


def epoch_rows(engine: Engine, run_ids: Sequence[int],
               after: dict[int, int] | None = None) -> list[dict[str, Any]]:
    """Epoch rows of `run_ids` as dicts (EPOCH_COLUMNS), by run and epoch; with `after`, only
    epochs newer than `after[run_id]`. No pandas."""
    with session_scope(engine, write=False) as session:
        return rows_as_dicts(session, _epochs_query(run_ids, after))


def epochs_frame(
    engine: Engine, run_ids: Sequence[int], after: dict[int, int] | None = None
) -> pd.DataFrame:
    """Epoch rows of `run_ids`; with `after`, only epochs newer than `after[run_id]`."""
    import pandas as pd

    return pd.DataFrame(epoch_rows(engine, run_ids, after), columns=EPOCH_COLUMNS)


def layer_stats_frame(engine: Engine, run_ids: list[int]) -> pd.DataFrame:
    """Per-layer gradient and weight norms of `run_ids`, by run and epoch."""
    import pandas as pd

    query = select(*[getattr(LayerStatRow, c) for c in LAYER_STAT_COLUMNS]).where(
        LayerStatRow.run_id.in_(run_ids)).order_by(LayerStatRow.run_id, LayerStatRow.epoch)
    with session_scope(engine, write=False) as session:
        return pd.DataFrame(session.execute(query).mappings().all(), columns=LAYER_STAT_COLUMNS)


@dataclass
class _Held:
    last_epoch: int
    frame: Any  # pd.DataFrame of EPOCH_COLUMNS, epochs 1..last_epoch as recorded


@dataclass
class EpochCache:
    """Epochs of runs, shared by every page session of a process and bounded in size.

    Entries are keyed by (database, run id) and hold the run's epochs up to its last epoch. A
    read asks the database once for the last epoch of every run wanted (an index-only query),
    returns held epochs where they are current, and reads only the epochs newer than those held
    (a live run adds one row per refresh). The least recently used runs are dropped once more
    than `max_rows` epoch rows are held, so memory stays bounded however many sessions read.
    """

    max_rows: int = 100_000
    _held: OrderedDict[tuple[str, int], _Held] = field(default_factory=OrderedDict, repr=False)
    _rows: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def read(self, engine: Engine, run_ids: Sequence[int]) -> tuple[pd.DataFrame, int]:
        """(epochs of `run_ids` in that order, epoch rows read from the database for it)."""
        import pandas as pd

        db = engine.url.render_as_string(hide_password=False)
        current = last_epochs(engine, run_ids)
        after: dict[int, int] = {}
        with self._lock:
            held = {rid: self._held.get((db, rid)) for rid in run_ids}
        for rid in run_ids:
            entry, last = held[rid], current.get(rid, 0)
            if entry is None or entry.last_epoch > last:  # not held, or epochs went away
                held[rid] = None
                after[rid] = 0
            elif entry.last_epoch < last:
                after[rid] = entry.last_epoch
        fresh = epochs_frame(engine, list(after), after={r: a for r, a in after.items() if a}) \
            if after else pd.DataFrame(columns=EPOCH_COLUMNS)
        for rid in after:
            new = fresh[fresh["run_id"] == rid].reset_index(drop=True)
            old = held[rid]
            frame = new if old is None or old.frame.empty else \
                pd.concat([old.frame, new], ignore_index=True)
            held[rid] = _Held(current.get(rid, 0), frame)
        with self._lock:
            for rid in run_ids:
                entry = held[rid]
                self._store((db, rid), entry if entry is not None and len(entry.frame) else None)
            self._evict()
        frames = [h.frame for h in held.values() if h is not None and len(h.frame)]
        out = pd.concat(frames, ignore_index=True) if frames else \
            pd.DataFrame(columns=EPOCH_COLUMNS)
        return out, len(fresh)

    def forget(self, engine: Engine, run_id: int) -> None:
        """Drop what is held for a run (it was deleted)."""
        key = (engine.url.render_as_string(hide_password=False), run_id)
        with self._lock:
            entry = self._held.pop(key, None)
            if entry is not None:
                self._rows -= len(entry.frame)

    @property
    def rows_held(self) -> int:
        return self._rows

    def __len__(self) -> int:
        return len(self._held)

    def _store(self, key: tuple[str, int], entry: _Held | None) -> None:
        old = self._held.pop(key, None)
        if old is not None:
            self._rows -= len(old.frame)
        if entry is not None:
            self._held[key] = entry  # at the end: the most recently used
            self._rows += len(entry.frame)

    def _evict(self) -> None:
        while self._rows > self.max_rows and self._held:
            _, entry = self._held.popitem(last=False)
            self._rows -= len(entry.frame)


EPOCH_CACHE = EpochCache()  # the one every page of this process reads curves through


# --- steps within epochs ---------------------------------------------------------------------------
STEP_COLUMNS = ["run_id", "epoch", "step", "loss", "accuracy", "recorded_at"]


def step_rows(engine: Engine, run_ids: Sequence[int],
              after: dict[int, int] | None = None) -> list[dict[str, Any]]:
    """Sampled training steps of `run_ids` as dicts (STEP_COLUMNS), by run and step; with
    `after`, only steps after `after[run_id]` (read through the (run_id, step) key). No pandas."""
    if not run_ids:
        return []
    query = _rows_after(StepMetricRow, STEP_COLUMNS, StepMetricRow.step, run_ids, after)
    with session_scope(engine, write=False) as session:
        return rows_as_dicts(session, query)


def last_epochs(engine: Engine, run_ids: Sequence[int]) -> dict[int, int]:
    """The last recorded epoch of each run that has one (from the (run_id, epoch) index alone)."""
    if not run_ids:
        return {}
    query = select(EpochMetricRow.run_id, func.max(EpochMetricRow.epoch)).where(
        EpochMetricRow.run_id.in_(run_ids)).group_by(EpochMetricRow.run_id)
    with session_scope(engine, write=False) as session:
        return {int(rid): int(last) for rid, last in session.execute(query)}


def epoch_counts(engine: Engine, run_ids: Sequence[int]) -> dict[int, int]:
    """How many epochs each run has recorded (runs with none are left out)."""
    if not run_ids:
        return {}
    query = select(EpochMetricRow.run_id, func.count()).where(
        EpochMetricRow.run_id.in_(run_ids)).group_by(EpochMetricRow.run_id)
    with session_scope(engine, write=False) as session:
        return {int(rid): int(n) for rid, n in session.execute(query)}
