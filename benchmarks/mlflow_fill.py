"""Copy this project's runs into an MLflow tracking store, through MLflow's own client
(`MlflowClient.create_run`, `log_batch`, `set_terminated`): run by benchmarks/vs_mlflow.py with
the Python of a throwaway virtualenv that has MLflow installed. Only the standard library and
MLflow: nothing of this project is imported, its SQLite file is read with `sqlite3`.

Each run becomes one MLflow run in the experiment "cnn-ablation" (marked as model training):
its name (or "run-N"), its config as params (batch_size, bn_conv_1 ... bn_dense_1, dataset, dropout, epochs,
learning_rate, seed, val_split), its four curves as metrics with one step per epoch (loss,
accuracy, val_loss, val_accuracy), test_accuracy as a metric, its start and end times and status.

    <venv>/bin/python benchmarks/mlflow_fill.py ABLATION_DB MLFLOW_TRACKING_URI
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time

BN_NAMES = ("bn_conv_1", "bn_conv_2", "bn_conv_3", "bn_conv_4", "bn_dense_1")
CURVES = ("loss", "accuracy", "val_loss", "val_accuracy")
STATUS = {"completed": "FINISHED", "failed": "FAILED", "cancelled": "KILLED",
          "diverged": "FAILED", "running": "RUNNING", "queued": "SCHEDULED"}


def params_of(config: dict) -> dict[str, str]:
    params = {}
    for key, value in sorted(config.items()):
        if value is None or key == "preset":
            continue
        if key == "bn":
            params.update({name: str(bool(on)) for name, on in zip(BN_NAMES, value, strict=True)})
        else:
            params[key] = str(value)
    return params


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("tracking_uri")
    parser.add_argument("--experiment", default="cnn-ablation")
    args = parser.parse_args()

    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=args.tracking_uri)
    existing = client.get_experiment_by_name(args.experiment)
    experiment = (existing.experiment_id if existing is not None
                  else client.create_experiment(args.experiment))
    # MLflow 3 opens an experiment in its GenAI view unless it is marked as model training
    # (its "Model training" switch): what a user who trains CNNs picks
    client.set_experiment_tag(experiment, "mlflow.experimentKind", "custom_model_development")
    source = sqlite3.connect(args.database)
    runs = source.execute("SELECT id, name, config_json, status, created_at, started_at, "
                          "finished_at, test_accuracy FROM runs ORDER BY id").fetchall()
    started = time.perf_counter()
    for done, (run_id, name, config_json, status, created, begun, finished, test) in \
            enumerate(runs, 1):
        epochs = source.execute("SELECT epoch, loss, accuracy, val_loss, val_accuracy, "
                                "recorded_at FROM epoch_metrics WHERE run_id = ? ORDER BY epoch",
                                (run_id,)).fetchall()
        start_ms = int(1000 * (begun or created))
        run = client.create_run(experiment, start_time=start_ms,
                                tags={"cnn_ablation.run_id": str(run_id)},
                                run_name=name or f"run-{run_id}")
        metrics = [Metric(key, float(value), int(1000 * at), epoch)
                   for epoch, *values, at in epochs
                   for key, value in zip(CURVES, values, strict=True) if value is not None]
        if test is not None:
            metrics.append(Metric("test_accuracy", float(test), int(1000 * (finished or begun)),
                                  0))
        params = [Param(k, v) for k, v in params_of(json.loads(config_json)).items()]
        for chunk in range(0, max(len(metrics), 1), 1000):  # log_batch takes 1,000 at most
            client.log_batch(run.info.run_id, metrics=metrics[chunk:chunk + 1000],
                             params=params if chunk == 0 else [],
                             tags=[RunTag("cnn_ablation.status", status)] if chunk == 0 else [])
        client.set_terminated(run.info.run_id, STATUS.get(status, "FINISHED"),
                              int(1000 * finished) if finished else None)
        if done % 1000 == 0:
            print(f"  mlflow: {done:,} runs copied, {time.perf_counter() - started:.0f} s",
                  flush=True)
    print(f"  mlflow: {len(runs):,} runs in experiment {experiment} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    print(json.dumps({"experiment_id": experiment, "runs": len(runs)}))


if __name__ == "__main__":
    sys.exit(main())
