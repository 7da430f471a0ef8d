"""A study's analysed results kept on disk, so that a new dashboard process (a restart, an
upgrade of the server, a second server on the same database) shows a study at once instead of
analysing it again: 0.7 s for the 96 cells of a 480-run study, plus half a second to import scipy.

The Studies page keeps results in memory, shared by its sessions, keyed by what they depend on
(the study, its spec, `polling.runs_fingerprint` of its runs, the metric, the power target);
behind that memory is this folder, `$ABLATION_HOME/cache/study-results/`, one pickle per key,
whose name also carries a digest of the analysis code (cnn_ablation/studies/*.py): results made
by other code are never read. The database's address is not in the key (a PostgreSQL server on
another port, a copied file: the same runs give the same results); the runs' fingerprint is
(their statuses, ids and the times they started and finished, to the microsecond). Files are written
whole (a temporary file, then a rename), the newest KEEP are kept, and a file that cannot be
read is analysed again. The folder belongs to whoever owns the database beside it: pickles run
code when read, like the checkpoints in the same home.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

from cnn_ablation.settings import settings

log = logging.getLogger(__name__)
KEEP = 256  # files kept (a 480-run study's results: about 200 KB)


@cache
def code_digest() -> str:
    """A digest of the analysis code: results saved by other code are not read."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def folder() -> Path:
    return settings().home / "cache" / "study-results"


def saved(key: tuple, compute: Callable[[], dict]) -> dict:
    """`compute()`'s result for `key` (a tuple of plain values whose repr names what the result
    depends on), from disk when saved there before, else computed and saved."""
    name = hashlib.sha256(repr((key, code_digest())).encode()).hexdigest()[:32]
    path = folder() / f"{name}.pickle"
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: analyse again
        log.warning("study results %s unreadable (%s): analysing again", path, exc)
    result = compute()
    part = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as part:
            pickle.dump(result, part, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(part.name, path)
        _prune(path.parent)
    except Exception as exc:  # noqa: BLE001 - a read-only home: the results are still shown
        log.warning("study results not saved in %s: %s", path.parent, exc)
        if part is not None:
            Path(part.name).unlink(missing_ok=True)
    return result


def _prune(where: Path) -> None:
    files = sorted(where.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[KEEP:]:
        old.unlink(missing_ok=True)
