"""The test pass: one `predict` over the test set with progress beats, giving test loss, accuracy
and the confusion matrix as Keras' `evaluate` would compute them."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from sqlalchemy import Engine

from cnn_ablation.data.arrays import Dataset
from cnn_ablation.storage import lifecycle


class TestProgress(keras.callbacks.Callback):
    """Progress beats while the test set is predicted ("testing: 4,000 of 10,000 images")."""

    def __init__(self, engine: Engine, run_id: int, worker_id: str, batch_size: int = 1000):
        super().__init__()
        self.engine, self.run_id, self.worker_id = engine, run_id, worker_id
        self.batch_size = batch_size
        self.total = 0
        self.epoch: int | None = None

    def on_predict_batch_end(self, batch: int, logs: Any = None) -> None:
        done = min((batch + 1) * self.batch_size, self.total)
        lifecycle.report_progress(self.engine, self.run_id, self.worker_id, "testing",
                                  self.epoch, done, self.total)


def test_metrics(model: keras.Model, data: Dataset,
                 progress: TestProgress | None = None) -> tuple[float, float, dict]:
    """Test loss, accuracy and confusion matrix from one pass over the test set (`predict`),
    computed as Keras' `evaluate` computes them (tests check they agree to 1e-6)."""
    callbacks = []
    if progress is not None:
        progress.total = len(data.y_test)
        callbacks.append(progress)
    if model.steps_per_execution != 1:  # one call per 1,000 images: progress after each
        model.steps_per_execution = 1
        model.make_predict_function(force=True)
    probs = model.predict(data.x_test, batch_size=1000, verbose=0, callbacks=callbacks)
    labels = data.y_test.astype(np.int64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # as Keras' cross-entropy does
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1 - 1e-7)
    loss = float(np.mean(-np.log(picked.astype(np.float64))))
    predicted = np.argmax(probs, axis=1)
    accuracy = float(np.mean(predicted == labels))
    k = data.info.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    report = {"class_names": list(data.info.class_names), "confusion": confusion.tolist()}
    return loss, accuracy, report
