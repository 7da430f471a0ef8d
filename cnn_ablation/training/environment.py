"""Where a run trains: GPU memory set up before the first op, and what the run records about its
environment (Keras, backend and its version, numpy, Python, host, GPUs, device)."""

from __future__ import annotations

import importlib
import socket
from typing import Any

import keras
import numpy as np

from cnn_ablation.settings import settings


def configure_gpus(memory_limit_mb: int | None) -> None:
    """Before any TensorFlow op: grow GPU memory as needed rather than taking it all, or, when a
    worker shares a GPU between K runs, cap this process at its share."""
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        if memory_limit_mb is not None:
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)])
        else:
            tf.config.experimental.set_memory_growth(gpu, True)


def environment() -> dict[str, Any]:
    """What a result depends on besides its config: Keras, its backend (name and the version of
    the library behind it: tensorflow, jax or torch), numpy, Python, the platform, the GPUs this
    process sees and the device it trains on. Imports only the backend Keras runs on."""
    import platform

    backend = keras.backend.backend()
    version, gpus = _backend_version_and_gpus(backend)
    return {"python": platform.python_version(), "keras": keras.__version__,
            "keras_backend": backend, "backend_version": version, backend: version,
            "numpy": np.__version__, "host": socket.gethostname(),
            "platform": platform.platform(), "gpus": gpus, "device": gpus[0] if gpus else "cpu",
            "visible_gpus": settings().visible_gpus}


def _backend_version_and_gpus(backend: str) -> tuple[str, list[str]]:
    """The backend library's version and the GPUs it sees, asked of that library alone."""
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.__version__, [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":  # imported by name: neither is installed here, nor typed for mypy
        jax = importlib.import_module("jax")
        return jax.__version__, [str(d) for d in jax.devices() if d.platform != "cpu"]
    if backend == "torch":
        torch = importlib.import_module("torch")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return torch.__version__, [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                                   for i in range(count)]
    return np.__version__, []  # "numpy" (inference only): nothing behind it but numpy


def process_started_at() -> float | None:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # psutil missing or /proc unreadable: the log line just lacks this part
        return None
