"""The registry of networks a run can ablate: the chapter's two presets, `.keras` files, and Python
builders. Pure Python (no TensorFlow): the web app lists networks with this module, and asks a
short-lived helper process (`cnn_ablation.networks.probe`) for what needs Keras.

A custom network is named in a run's config by its registry key plus a content hash,
`file:resnet@1a2b3c4d5e6f` or `builder:my_nets:vgg@1a2b3c4d5e6f`: every file is also kept
content-addressed under `$ABLATION_HOME/networks/.store/`, so a file changed later never
silently changes what an old run meant (the old run still loads the bytes it trained).

Safety: a `.keras` file is loaded with `safe_mode=True` (no code from a file); Python builders
are imported only from directories the operator lists in `ABLATION_NETWORK_PATHS`, never from
an upload.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cnn_ablation.architecture import PRESETS
from cnn_ablation.config import ConfigError
from cnn_ablation.settings import settings

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # a .keras file this small network family fits easily
# What a .keras archive may unpack to, checked member by member before Keras opens it: a 1.6 MB
# file whose config.json inflated to 1.5 GB took 52 s and 3.8 GB of memory to probe.
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_RATIO = 100  # a member may unpack to at most this many times its packed size (past 1 MB)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_MODULE_FUNC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*:[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Network:
    key: str  # "seed" | "conv_basics" | "file:NAME@HASH" | "builder:MODULE:FUNC@HASH"
    title: str
    kind: str  # "preset" | "file" | "builder"
    path: Path | None = None  # the content-addressed copy (file) or module source (builder)

    @property
    def digest(self) -> str | None:
        return self.key.rsplit("@", 1)[1] if "@" in self.key else None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def networks_dir() -> Path:
    return settings().home / "networks"


def _store(data: bytes) -> Path:
    path = networks_dir() / ".store" / f"{_digest(data)}.keras"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{_digest(data)}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def add_file(name: str, data: bytes) -> Network:
    """Save an uploaded `.keras` file as `networks/NAME.keras` (and its content-addressed copy).
    Refuses a bad name, an empty or oversized file, and anything that is not a Keras archive."""
    if not name.endswith(".keras"):
        raise ConfigError("network", name, "a Keras 3 `.keras` file (model.save('x.keras')); "
                          "this file's name does not end in .keras")
    stem = name.removesuffix(".keras")
    if not _NAME.match(stem):
        raise ConfigError("network", name, "a file name of letters, digits, `_`, `-`, `.` "
                          "(at most 80), ending in .keras")
    if not data or len(data) > MAX_UPLOAD_BYTES:
        raise ConfigError("network", f"{name} ({len(data):,} bytes)",
                          f"a .keras file of 1 byte to {MAX_UPLOAD_BYTES // 2**20} MB")
    if not data.startswith(b"PK"):  # a .keras file is a zip archive
        raise ConfigError("network", name, "a Keras 3 `.keras` file (model.save('x.keras'))")
    check_archive(name, data)
    networks_dir().mkdir(parents=True, exist_ok=True)
    (networks_dir() / f"{stem}.keras").write_bytes(data)
    _store(data)
    return Network(f"file:{stem}@{_digest(data)}", stem, "file", _store(data))


def check_archive(name: str, data: bytes) -> None:
    """Refuse a `.keras` archive that is not a zip, or whose members would unpack past
    MAX_UNPACKED_BYTES in all or past MAX_RATIO times their packed size, from its directory
    alone (nothing is unpacked): a decompression bomb is refused in milliseconds."""
    import io
    import zipfile

    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise ConfigError("network", name, "a Keras 3 `.keras` file (a zip archive; this one "
                          f"cannot be read: {exc})") from exc
    total = sum(m.file_size for m in members)
    if total > MAX_UNPACKED_BYTES:
        raise ConfigError("network", f"{name} (unpacks to {total / 2**20:,.0f} MB)",
                          f"a .keras file that unpacks to at most {MAX_UNPACKED_BYTES // 2**20} "
                          "MB")
    for m in members:
        if m.file_size > 2**20 and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise ConfigError("network", f"{name} ({m.filename}: {m.compress_size:,} bytes "
                              f"unpacking to {m.file_size:,})", "a .keras file whose members "
                              f"unpack to at most {MAX_RATIO} times their packed size")


_LISTED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest


def _listed_digest(path: Path, size: int, mtime_ns: int) -> str | None:
    """The file's digest, read and hashed once per (path, size, modification time), with its
    content-addressed copy made then: a page listing networks on every render reads nothing."""
    key = (str(path), size, mtime_ns)
    digest = _LISTED.get(key)
    if digest is None:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        _store(data)
        digest = _LISTED[key] = _digest(data)
    return digest


# Refusals that do not depend on the dataset: a file with one of these is refused at upload
NOT_A_USABLE_NETWORK = ("loads in safe mode", "at least one BatchNormalization or Dropout",
                        "softmax probabilities or linear logits", "takes images")


def check_added(network: Network) -> None:
    """Ask Keras (the probe, a helper process) about a just-added file on a stand-in dataset
    (32x32x3, 10 classes): what is wrong with the file itself (a Lambda layer safe mode will not
    load, no switch to ablate, an output cross-entropy cannot train, not an image model) is
    refused now, and the file taken off the list, instead of when it is picked. Whether it fits
    a dataset is asked when one is chosen."""
    answer = probe(network.key, (32, 32, 3), 10)
    if not answer["ok"] and any(m in answer["error"] for m in NOT_A_USABLE_NETWORK):
        remove_file(network.title)
        raise ConfigError(answer["field"], network.title + ".keras",
                          answer["error"].split("allowed: ", 1)[-1])


def list_networks() -> list[Network]:
    """The presets, then `.keras` files in `$ABLATION_HOME/networks/`, then builders found in
    `ABLATION_NETWORK_PATHS` (functions named `build_*` in each directory's modules)."""
    found = [Network(key, preset.title, "preset") for key, preset in PRESETS.items()]
    folder = networks_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.keras")):
            try:
                stat = path.stat()
            except OSError:
                continue
            if not path.is_file():  # a folder named x.keras is not a network
                continue
            digest = _listed_digest(path, stat.st_size, stat.st_mtime_ns)
            if digest is not None:
                found.append(Network(f"file:{path.stem}@{digest}", path.stem, "file",
                                     networks_dir() / ".store" / f"{digest}.keras"))
    for directory in settings().network_paths:
        for source in sorted(directory.glob("*.py")):
            text = source.read_text(errors="replace")
            digest = _digest(text.encode())
            for func in re.findall(r"^def (build_[A-Za-z0-9_]*)\(", text, re.MULTILINE):
                found.append(Network(f"builder:{source.stem}:{func}@{digest}",
                                     f"{source.stem}.{func}", "builder", source))
    return found


def resolve(key: str) -> Network:
    """The network a config names. A file key resolves by its hash (the bytes the run meant),
    even after `networks/NAME.keras` was replaced; a builder must still have that source."""
    if key in PRESETS:
        return Network(key, PRESETS[key].title, "preset")
    kind, _, rest = key.partition(":")
    name, _, digest = rest.rpartition("@")
    if kind == "file" and name and digest:
        path = networks_dir() / ".store" / f"{digest}.keras"
        if path.exists():
            return Network(key, name, "file", path)
        raise ConfigError("network", key, "a network file that exists here "
                          f"(put it in {networks_dir()} or upload it on the New run page)")
    if kind == "builder" and _MODULE_FUNC.match(name) and digest:
        module = name.split(":")[0]
        for directory in settings().network_paths:
            source = directory / f"{module}.py"
            if source.exists():
                if _digest(source.read_text(errors="replace").encode()) != digest:
                    raise ConfigError("network", key, f"the builder as it was when named "
                                      f"({source} has changed since; its key now differs)")
                return Network(key, name.replace(":", "."), "builder", source)
        raise ConfigError("network", key, "a builder module:function in a directory listed in "
                          "ABLATION_NETWORK_PATHS")
    known = ", ".join(n.key for n in list_networks())
    raise ConfigError("network", key, f"one of: {known}")


def find(name: str) -> Network:
    """A network by key, or by a custom network's short name (`resnet`, `my_nets:build_vgg`)."""
    if name in PRESETS or "@" in name:
        return resolve(name)
    for network in list_networks():
        if network.kind != "preset" and network.key.split(":", 1)[1].rsplit("@", 1)[0] == name:
            return network
    return resolve(name)  # refuses with the list of known networks


def copy_builder_dirs() -> list[Path]:
    """The builder directories (for a helper process's sys.path)."""
    return [d for d in settings().network_paths if d.is_dir()]


def remove_file(stem: str) -> None:
    """Take `networks/STEM.keras` off the list (runs that used it keep their stored copy)."""
    path = networks_dir() / f"{stem}.keras"
    if path.exists():
        path.unlink()



PROBE_ANSWER = 2  # 2: each layer with its output shape


def probe(key: str, shape: tuple[int, int, int], classes: int, bn_off: tuple[str, ...] = (),
          dropout: tuple[tuple[str, float], ...] = ()) -> dict:
    """What Keras says about a variant of your network (see `network_probe`), from a
    short-lived process, cached on disk by (network hash, switches, data shape)."""
    import json
    import os
    import subprocess
    import sys

    args = [key, "--shape", ",".join(map(str, shape)), "--classes", str(classes),
            "--bn-off", ",".join(sorted(bn_off)),
            "--dropout", ",".join(f"{n}={r:g}" for n, r in sorted(dropout))]
    # PROBE_ANSWER names what an answer holds: a cached answer of an older form is not used
    cache = networks_dir() / ".cache" / f"{_digest(json.dumps([PROBE_ANSWER, *args]).encode())}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    network = resolve(key)
    if network.kind == "file" and network.path is not None:
        check_archive(network.title + ".keras", network.path.read_bytes())
    done = subprocess.run([sys.executable, "-m", "cnn_ablation.networks.probe", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise ConfigError("network", key, "a network Keras can load here (the probe failed: "
                          f"{(done.stderr.strip().splitlines() or ['no output'])[-1][:300]})")
    answer = json.loads(lines[-1])
    # cached by content either way: a network Keras refuses is refused again at once, not
    # probed again on every rerun of the page
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(answer))
    return answer
