"""Every bad input is refused cleanly: exit code 2, one line naming the field (or variable), no
traceback, nothing queued, and for a refused submit / train / study create no database made.

The table runs the real command line (`python -m cnn_ablation ...`) against real files made
here: folder datasets with corrupt, truncated, fake and oversized images, a read-only home, a
home that is a file, database URLs that cannot work. The commands are independent, so they run
side by side once for the module; each case then checks its own result. Nothing trains.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.support import ROOT

LONG = "n" * 201
SECRET = "s3cr3t-pw"  # the password in every database URL below: it must never be printed


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    names: str  # the field or variable the message must name
    says: str = ""  # more of the message, where it matters what it says
    env: tuple[tuple[str, str], ...] = ()  # values may use {tmp}, {file}, {readonly}, {db:NAME}
    seeded: bool = False  # a database with one queued run exists before the command


def case(id, *args, names, says="", env=(), seeded=False) -> Case:
    return Case(id, tuple(args), names, says, tuple(env), seeded)


S = ("--dataset", "synthetic")  # a dataset that needs no files


def folder(name: str) -> str:
    return "folder:{folder:" + name + "}"


CASES = [
    # --- presets and datasets ------------------------------------------------------------------
    case("preset-unknown", "submit", "--preset", "resnet", *S, names="--preset"),
    case("dataset-unknown", "submit", "--dataset", "imagenet", names="dataset", says="imagenet"),
    case("dataset-empty", "submit", "--dataset", "", names="dataset"),
    case("dataset-synthetic-5", "submit", "--dataset", "synthetic:5", names="dataset",
         says="10 <= N <= 1,000,000"),
    case("dataset-synthetic-text", "submit", "--dataset", "synthetic:many", names="dataset"),
    case("dataset-synthetic-negative", "submit", "--dataset", "synthetic:-100", names="dataset"),
    case("dataset-synthetic-colon", "train", "--dataset", "synthetic:", names="dataset"),
    case("dataset-folder-no-path", "submit", "--dataset", "folder:", names="dataset"),
    case("dataset-uppercase", "submit", "--dataset", "CIFAR10", names="dataset"),
    # --- folder datasets -----------------------------------------------------------------------
    case("folder-missing", "submit", "--dataset", "folder:/does/not/exist", names="dataset",
         says="found none in train"),
    case("folder-empty", "submit", "--dataset", folder("empty"), names="dataset",
         says="found none in train"),
    case("folder-no-test", "submit", "--dataset", folder("no_test"), names="dataset",
         says="found none in test"),
    case("folder-no-class-folders", "submit", "--dataset", folder("flat"), names="dataset",
         says="train/<class>/"),
    case("folder-one-class", "submit", "--dataset", folder("one_class"), names="dataset",
         says="at least 2 classes"),
    case("folder-class-only-in-test", "submit", "--dataset", folder("only_in_test"),
         names="dataset", says="only in test/: fox"),
    case("folder-classes-differ", "train", "--dataset", folder("mismatch"), names="dataset",
         says="only in train/: bird; only in test/: fish"),
    case("folder-empty-test-class", "submit", "--dataset", folder("empty_test_class"),
         names="dataset", says="only in train/: dog"),
    case("folder-corrupt-png", "submit", "--dataset", folder("corrupt"), names="dataset",
         says="bad.png: not a readable image"),
    case("folder-truncated-png", "submit", "--dataset", folder("truncated_png"), names="dataset",
         says="half.png: not a readable image"),
    case("folder-truncated-jpg", "train", "--dataset", folder("truncated_jpg"), names="dataset",
         says="half.jpg: not a readable image"),
    case("folder-text-as-jpg", "submit", "--dataset", folder("text_jpg"), names="dataset",
         says="notes.jpg: not a readable image"),
    case("folder-empty-file", "submit", "--dataset", folder("zero_bytes"), names="dataset",
         says="empty.png: not a readable image"),
    case("folder-bomb", "submit", "--dataset", folder("bomb"), names="dataset",
         says="bomb.png: too many pixels"),
    case("folder-bomb-warning-size", "submit", "--dataset", folder("bomb_warning"),
         names="dataset", says="bomb.png: too many pixels"),
    case("folder-side-too-large", "submit", "--dataset", folder("wide"), names="dataset",
         says="wide.png: 1100x8 pixels; the largest side allowed is 1024"),
    case("folder-side-over-env-limit", "submit", "--dataset", folder("good"), names="dataset",
         says="8x8 pixels; the largest side allowed is 7 (ABLATION_MAX_IMAGE_SIDE)",
         env=[("ABLATION_MAX_IMAGE_SIDE", "7")]),
    case("folder-pipe-named-png", "submit", "--dataset", folder("fifo"), names="dataset",
         says="not a regular file"),
    case("folder-folder-named-png", "submit", "--dataset", folder("dir_png"), names="dataset",
         says="not a regular file"),
    case("folder-path-too-long", "submit", "--dataset", "folder:/" + "x" * 5000, names="dataset"),
    case("folder-batch-larger-than-data", "submit", "--dataset", folder("good"),
         "--batch-size", "64", names="batch_size"),
    case("summary-folder-missing", "summary", "--dataset", "folder:/does/not/exist",
         names="dataset", says="found none in train"),
    case("summary-folder-corrupt", "summary", "--dataset", folder("corrupt"), names="dataset",
         says="not a readable image"),
    case("summary-folder-one-class", "summary", "--dataset", folder("one_class"),
         names="dataset", says="at least 2 classes"),
    # --- --bn --------------------------------------------------------------------------------
    case("bn-too-short", "submit", *S, "--bn", "1,1,1", names="bn", says="5 values"),
    case("bn-too-long", "submit", *S, "--bn", "1,1,1,1,1,1", names="bn"),
    case("bn-two", "submit", *S, "--bn", "1,2,0,0,1", names="bn"),
    case("bn-words", "submit", *S, "--bn", "on,on,on,on,on", names="bn"),
    case("bn-spaces", "train", *S, "--bn", "1 1 1 1 1", names="bn"),
    case("bn-empty", "submit", *S, "--bn", "", names="bn"),
    case("bn-gap", "submit", *S, "--bn", "1,,1,1,1", names="bn"),
    case("bn-on-a-preset-without-bn", "submit", *S, "--preset", "conv_basics", "--bn", "1",
         names="bn", says="no BatchNorm positions"),
    case("summary-bn-short", "summary", "--bn", "1,0", names="bn"),
    # --- dropout -------------------------------------------------------------------------------
    case("dropout-one", "submit", *S, "--dropout", "1", names="dropout", says="[0, 1)"),
    case("dropout-negative", "submit", *S, "--dropout", "-0.1", names="dropout"),
    case("dropout-nan", "submit", *S, "--dropout", "nan", names="dropout"),
    case("dropout-inf", "train", *S, "--dropout", "inf", names="dropout"),
    case("dropout-overflow", "submit", *S, "--dropout", "1e400", names="dropout"),
    case("dropout-word", "submit", *S, "--dropout", "half", names="--dropout"),
    case("summary-dropout-nan", "summary", "--dropout", "NaN", names="dropout"),
    # --- epochs --------------------------------------------------------------------------------
    case("epochs-zero", "submit", *S, "--epochs", "0", names="epochs"),
    case("epochs-negative", "submit", *S, "--epochs", "-3", names="epochs"),
    case("epochs-over-limit", "submit", *S, "--epochs", "1001", names="epochs",
         says=">= 1 and <= 1000 (ABLATION_MAX_EPOCHS)"),
    case("epochs-huge", "train", *S, "--epochs", "100000000000000000000", names="epochs"),
    case("epochs-over-env-limit", "submit", *S, "--epochs", "6", names="epochs",
         says="epochs: 6 is not allowed; allowed: a whole number >= 1 and <= 5",
         env=[("ABLATION_MAX_EPOCHS", "5")]),
    case("epochs-default-over-env-limit", "submit", *S, names="epochs",
         says="epochs: 10 is not allowed; allowed: a whole number >= 1 and <= 3",
         env=[("ABLATION_MAX_EPOCHS", "3")]),
    case("epochs-fraction", "submit", *S, "--epochs", "1.5", names="--epochs"),
    case("epochs-word", "submit", *S, "--epochs", "ten", names="--epochs"),
    # --- batch size ----------------------------------------------------------------------------
    case("batch-zero", "submit", *S, "--batch-size", "0", names="batch_size"),
    case("batch-negative", "submit", *S, "--batch-size", "-32", names="batch_size"),
    case("batch-larger-than-data", "submit", *S, "--batch-size", "5000", names="batch_size",
         says="from 1 to 900"),
    case("batch-huge", "train", *S, "--batch-size", "100000000000000000000", names="batch_size"),
    case("batch-exponent", "submit", *S, "--batch-size", "1e3", names="--batch-size"),
    # --- learning rate -------------------------------------------------------------------------
    case("lr-zero", "submit", *S, "--lr", "0", names="learning_rate"),
    case("lr-negative", "submit", *S, "--lr", "-0.001", names="learning_rate"),
    case("lr-nan", "submit", *S, "--lr", "nan", names="learning_rate"),
    case("lr-inf", "submit", *S, "--lr", "inf", names="learning_rate"),
    case("lr-underflow", "train", *S, "--lr", "1e-400", names="learning_rate"),
    case("lr-word", "submit", *S, "--lr", "fast", names="--lr"),
    # --- seed and seeds ------------------------------------------------------------------------
    case("seed-negative", "submit", *S, "--seed", "-1", names="seed"),
    case("seed-2-to-the-32", "submit", *S, "--seed", "4294967296", names="seed",
         says=">= 0 and <= 4294967295"),
    case("seed-huge", "submit", *S, "--seed", "100000000000000000000", names="seed"),
    case("seed-2-to-the-64", "train", *S, "--seed", str(2**64), names="seed"),
    case("seed-fraction", "submit", *S, "--seed", "1.5", names="--seed"),
    case("seed-word", "submit", *S, "--seed", "lucky", names="--seed"),
    case("seeds-zero", "submit", *S, "--seeds", "0", names="seeds", says="from 1 to 50"),
    case("seeds-too-many", "submit", *S, "--seeds", "51", names="seeds"),
    case("seeds-negative", "submit", *S, "--seeds", "-2", names="seeds"),
    case("seeds-word", "submit", *S, "--seeds", "two", names="--seeds"),
    # --- validation split and limit ------------------------------------------------------------
    case("val-split-one", "submit", *S, "--val-split", "1", names="val_split"),
    case("val-split-negative", "submit", *S, "--val-split", "-0.1", names="val_split"),
    case("val-split-nan", "submit", *S, "--val-split", "nan", names="val_split"),
    case("val-split-leaves-nothing", "submit", "--dataset", "synthetic:10", "--batch-size", "1",
         "--val-split", "0.99", names="val_split", says="leaves at least 1"),
    case("val-split-word", "submit", *S, "--val-split", "some", names="--val-split"),
    case("limit-zero", "submit", *S, "--limit-train", "0", names="limit_train"),
    case("limit-negative", "train", *S, "--limit-train", "-5", names="limit_train"),
    case("limit-word", "submit", *S, "--limit-train", "all", names="--limit-train"),
    case("limit-beyond-data", "submit", *S, "--limit-train", "2000", names="limit_train",
         says="from 1 to 1000"),
    # --- image size ----------------------------------------------------------------------------
    case("image-size-on-synthetic", "submit", *S, "--image-size", "8x8", names="image_size",
         says="only folder:<path> datasets"),
    case("image-size-on-cifar10", "train", "--image-size", "32x32", names="image_size"),
    case("image-size-summary-default", "summary", "--image-size", "16x16", names="image_size"),
    case("image-size-one-number", "submit", "--dataset", folder("good"), "--image-size", "64",
         names="image_size", says="HxW"),
    case("image-size-three-numbers", "submit", "--dataset", folder("good"), "--image-size",
         "8x8x8", names="image_size"),
    case("image-size-letters", "submit", "--dataset", folder("good"), "--image-size", "axb",
         names="image_size"),
    case("image-size-empty", "submit", "--dataset", folder("good"), "--image-size", "",
         names="image_size"),
    case("image-size-zero", "submit", "--dataset", folder("good"), "--image-size", "0x0",
         names="image_size"),
    case("image-size-tiny", "submit", "--dataset", folder("good"), "--image-size", "2x8",
         names="image_size", says="from 4 to 1024"),
    case("image-size-negative", "submit", "--dataset", folder("good"), "--image-size=-8x8",
         names="image_size"),
    case("image-size-too-large", "train", "--dataset", folder("good"), "--image-size",
         "2000x2000", names="image_size", says="ABLATION_MAX_IMAGE_SIDE"),
    case("image-size-over-env-limit", "submit", "--dataset", folder("good"), "--image-size",
         "32x32", names="image_size", says="from 4 to 24",
         env=[("ABLATION_MAX_IMAGE_SIDE", "24")]),
    # --- names ---------------------------------------------------------------------------------
    case("name-too-long", "submit", *S, "--name", LONG, names="name", says="at most 200"),
    case("name-escape", "submit", *S, "--name", "\x1b[31mred", names="name",
         says="no control characters"),
    case("name-newline", "train", *S, "--name", "two\nlines", names="name"),
    case("name-tab", "submit", *S, "--name", "a\tb", names="name"),
    case("name-delete-char", "submit", *S, "--name", "a\x7fb", names="name"),
    case("name-zero-width", "submit", *S, "--name", "a\u200bb", names="name"),
    case("name-bell", "submit", *S, "--name", "ding\x07", names="name"),
    # --- run and study ids ---------------------------------------------------------------------
    case("show-zero", "show", "0", names="run_id", seeded=True),
    case("show-negative", "show", "-1", names="run_id", seeded=True),
    case("show-huge", "show", "100000000000000000000", names="run_id", seeded=True),
    case("show-2-to-the-63", "show", str(2**63), names="run_id", seeded=True),
    case("show-word", "show", "first", names="run_id", seeded=True),
    case("show-fraction", "show", "1.5", names="run_id", seeded=True),
    case("cancel-zero", "cancel", "0", names="run_id", seeded=True),
    case("cancel-huge", "cancel", "100000000000000000000", names="run_id", seeded=True),
    case("cancel-negative", "cancel", "-1", names="run_id", seeded=True),
    case("retry-zero", "retry", "0", names="run_id", seeded=True),
    case("retry-word", "retry", "last", names="run_id", seeded=True),
    case("delete-negative", "delete", "-5", names="run_id", seeded=True),
    case("delete-huge", "delete", "100000000000000000000", names="run_id", seeded=True),
    case("delete-unknown", "delete", str(2**63 - 1), names="run", says="does not exist",
         seeded=True),
    case("runs-unknown-status", "runs", "--status", "done", names="--status", seeded=True),
    case("study-show-zero", "study", "show", "0", names="study_id", seeded=True),
    case("study-fill-negative", "study", "fill", "-1", names="study_id", seeded=True),
    case("study-rerun-huge", "study", "rerun-failed", "100000000000000000000", names="study_id",
         seeded=True),
    case("study-export-word", "study", "export", "one", names="study_id", seeded=True),
    # --- study create --------------------------------------------------------------------------
    case("study-no-factor", "study", "create", *S, names="factors"),
    case("study-unknown-bn-factor", "study", "create", *S, "--factor", "bn_conv_9",
         names="factor", says="bn_conv_9"),
    case("study-unknown-numeric-factor", "study", "create", *S, "--factor", "lr=0.1,0.2",
         names="factor"),
    case("study-bn-factor-with-levels", "study", "create", *S, "--factor", "bn_conv_3=1,0",
         names="factor"),
    case("study-one-level", "study", "create", *S, "--factor", "dropout=0.5,0.5",
         names="dropout", says="at least two different levels"),
    case("study-level-word", "study", "create", *S, "--factor", "dropout=0,lots",
         names="dropout levels"),
    case("study-level-nan", "study", "create", *S, "--factor", "dropout=nan,0.5",
         names="dropout"),
    case("study-level-out-of-range", "study", "create", *S, "--factor", "dropout=0,1",
         names="dropout"),
    case("study-level-empty", "study", "create", *S, "--factor", "dropout=", names="dropout"),
    case("study-lr-level-zero", "study", "create", *S, "--factor", "learning_rate=0,0.1",
         names="learning_rate"),
    case("study-batch-level-fraction", "study", "create", *S, "--factor", "batch_size=1.5,2",
         names="batch_size levels"),
    case("study-batch-level-too-large", "study", "create", *S, "--factor",
         "batch_size=32,5000", names="batch_size", says="5000"),
    case("study-seeds-zero", "study", "create", *S, "--factor", "bn_conv_3", "--seeds", "0",
         names="seeds"),
    case("study-seeds-51", "study", "create", *S, "--study-preset", "chapter", "--seeds", "51",
         names="seeds"),
    case("study-bad-design", "study", "create", *S, "--factor", "bn_conv_3", "--design", "half",
         names="--design"),
    case("study-unknown-preset", "study", "create", *S, "--study-preset", "everything",
         names="--study-preset"),
    case("study-bad-dataset", "study", "create", "--dataset", "imagenet", "--study-preset",
         "chapter", names="dataset"),
    case("study-folder-corrupt", "study", "create", "--dataset", folder("corrupt"),
         "--factor", "bn_conv_3", names="dataset", says="not a readable image"),
    case("study-name-too-long", "study", "create", *S, "--factor", "bn_conv_3", "--name", LONG,
         names="name"),
    case("study-name-escape", "study", "create", *S, "--study-preset", "chapter", "--name",
         "x\x1b]0;pwned\x07", names="name"),
    case("study-bad-epochs", "study", "create", *S, "--factor", "bn_conv_3", "--epochs", "0",
         names="epochs"),
    # --- study settings (every run setting New run takes) and adaptive seeds -------------------
    case("study-limit-train-zero", "study", "create", *S, "--factor", "bn_conv_3",
         "--limit-train", "0", names="limit_train", says="a whole number >= 1, or none"),
    case("study-limit-train-negative", "study", "create", *S, "--factor", "bn_conv_3",
         "--limit-train", "-5", names="limit_train"),
    case("study-limit-train-word", "study", "create", *S, "--factor", "bn_conv_3",
         "--limit-train", "many", names="--limit-train"),
    case("study-val-split-one", "study", "create", *S, "--factor", "bn_conv_3",
         "--val-split", "1", names="val_split", says="a number in [0, 1)"),
    case("study-val-split-negative", "study", "create", *S, "--study-preset", "chapter",
         "--val-split", "-0.1", names="val_split"),
    case("study-val-split-nan", "study", "create", *S, "--factor", "bn_conv_3",
         "--val-split", "nan", names="val_split"),
    case("study-val-split-leaves-too-few", "study", "create", *S, "--factor", "bn_conv_3",
         "--val-split", "0.999", names="batch_size", says="after limit and validation split"),
    case("study-lr-zero", "study", "create", *S, "--factor", "bn_conv_3", "--lr", "0",
         names="learning_rate"),
    case("study-batch-zero", "study", "create", *S, "--factor", "bn_conv_3", "--batch-size",
         "0", names="batch_size"),
    case("study-target-pp-100", "study", "create", *S, "--factor", "bn_conv_3", "--target-pp",
         "100", "--max-seeds", "5", names="target_pp", says="> 0 and < 100"),
    case("study-target-pp-nan", "study", "create", *S, "--factor", "bn_conv_3", "--target-pp",
         "nan", "--max-seeds", "5", names="target_pp"),
    case("study-target-pp-word", "study", "create", *S, "--factor", "bn_conv_3", "--target-pp",
         "lots", "--max-seeds", "5", names="--target-pp"),
    case("study-max-seeds-51", "study", "create", *S, "--factor", "bn_conv_3", "--target-pp",
         "1", "--max-seeds", "51", names="max seeds", says="from 2 to 50"),
    case("study-max-seeds-word", "study", "create", *S, "--factor", "bn_conv_3", "--target-pp",
         "1", "--max-seeds", "five", names="--max-seeds"),
    case("study-max-seeds-alone", "study", "create", *S, "--factor", "bn_conv_3",
         "--max-seeds", "5", names="max_seeds", says="only with --target-pp"),
    case("study-seed-step-zero", "study", "create", *S, "--factor", "bn_conv_3", "--target-pp",
         "1", "--max-seeds", "5", "--seed-step", "0", names="seed step", says="from 1 to 50"),
    # --- bounds where a typo costs hours or memory ---------------------------------------------
    case("dataset-synthetic-huge", "submit", "--dataset", "synthetic:100000000", names="dataset",
         says="10 <= N <= 1,000,000"),
    case("lr-1e308", "submit", *S, "--lr", "1e308", names="learning_rate", says="<= 10"),
    case("batch-1e8", "submit", *S, "--batch-size", "100000000", names="batch_size",
         says="from 1 to 65,536"),
    case("study-96000-runs", "study", "create", *S, *[a for f in (
        "bn_conv_1", "bn_conv_2", "bn_conv_3", "bn_conv_4", "bn_dense_1",
        "dropout=0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
        "learning_rate=0.0001,0.0002,0.0003,0.0004,0.0005,0.0006,0.0007,0.0008,0.0009,0.001",
        "batch_size=8,16,24,32,40,48,56,64,72,80") for a in ("--factor", f)],
         names="factors", says="32,000 cells x 3 seeds = 96,000 runs"),
    case("study-preset-and-factor", "study", "create", *S, "--study-preset", "chapter",
         "--factor", "bn_conv_3", names="factor", says="nothing with --study-preset"),
    case("worker-gpu-not-here", "worker", "--gpus", "99", names="--gpus",
         says="GPUs found here"),
    case("database-in-memory", "submit", *S, names="ABLATION_DATABASE_URL", says="in-memory",
         env=(("ABLATION_DATABASE_URL", "sqlite://"),)),
    case("show-in-a-fresh-home", "show", "999", names="run 999", says="no database at"),
    case("cancel-in-a-fresh-home", "cancel", "3", names="run 3", says="no database at"),
    case("study-show-in-a-fresh-home", "study", "show", "1", names="study 1",
         says="no database at"),
    # --- study show / report / cancel / delete --------------------------------------------------
    case("study-show-power-zero", "study", "show", "1", "--power-pp", "0", names="--power-pp",
         says="> 0 and < 100", seeded=True),
    case("study-show-power-nan", "study", "show", "1", "--power-pp", "nan", names="--power-pp",
         seeded=True),
    case("study-report-power-100", "study", "report", "1", "--out", "{tmp}/report",
         "--power-pp", "100", names="--power-pp", seeded=True),
    case("study-show-unknown-metric", "study", "show", "1", "--metric", "loss",
         names="--metric", seeded=True),
    case("study-report-zero", "study", "report", "0", "--out", "{tmp}/report",
         names="study_id", seeded=True),
    case("study-report-unknown", "study", "report", "99", "--out", "{tmp}/report",
         names="study 99", says="does not exist", seeded=True),
    case("study-cancel-zero", "study", "cancel", "0", names="study_id", seeded=True),
    case("study-cancel-word", "study", "cancel", "all", names="study_id", seeded=True),
    case("study-cancel-unknown", "study", "cancel", "99", names="study 99",
         says="does not exist", seeded=True),
    case("study-delete-negative", "study", "delete", "-3", names="study_id", seeded=True),
    case("study-delete-unknown", "study", "delete", "99", "--with-runs", names="study 99",
         says="does not exist", seeded=True),
    # --- environment and database --------------------------------------------------------------
    case("home-is-a-file", "submit", *S, names="ABLATION_HOME", says="is a file",
         env=[("ABLATION_HOME", "{file}")]),
    case("home-under-a-file", "submit", *S, names="ABLATION_HOME", says="is a file",
         env=[("ABLATION_HOME", "{file}/home")]),
    case("home-read-only", "submit", *S, names="ABLATION_HOME",
         env=[("ABLATION_HOME", "{readonly}")]),
    case("home-read-only-runs", "runs", names="ABLATION_HOME",
         env=[("ABLATION_HOME", "{readonly}/home")]),
    case("home-in-proc", "runs", names="ABLATION_HOME", env=[("ABLATION_HOME", "/proc/1/nope")]),
    case("url-in-proc", "submit", *S, names="ABLATION_DATABASE_URL",
         env=[("ABLATION_DATABASE_URL", "sqlite:////proc/1/nope/x.db")]),
    case("url-parent-is-a-file", "submit", *S, names="ABLATION_DATABASE_URL", says="is a file",
         env=[("ABLATION_DATABASE_URL", "sqlite:///{file}/x.db")]),
    case("url-is-a-folder", "runs", names="ABLATION_DATABASE_URL", says="is a folder",
         env=[("ABLATION_DATABASE_URL", "sqlite:///{tmp}")]),
    case("url-not-a-database", "runs", names="ABLATION_DATABASE_URL", says="database",
         env=[("ABLATION_DATABASE_URL", "sqlite:///{db:garbage}")]),
    case("url-not-a-database-submit", "submit", *S, names="ABLATION_DATABASE_URL",
         env=[("ABLATION_DATABASE_URL", "sqlite:///{db:garbage}")]),
    case("url-unknown-driver", "submit", *S, names="ABLATION_DATABASE_URL", says="nosuchdriver",
         env=[("ABLATION_DATABASE_URL", f"postgresql+nosuchdriver://u:{SECRET}@127.0.0.1/db")]),
    case("url-driver-not-installed", "runs", names="ABLATION_DATABASE_URL",
         env=[("ABLATION_DATABASE_URL", f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:1/db")]),
    case("url-mysql-driver", "runs", names="ABLATION_DATABASE_URL",
         env=[("ABLATION_DATABASE_URL", f"mysql://u:{SECRET}@127.0.0.1:1/db")]),
    case("url-no-server", "submit", *S, names="ABLATION_DATABASE_URL",
         env=[("ABLATION_DATABASE_URL", f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db")]),
    case("url-unknown-kind", "runs", names="ABLATION_DATABASE_URL",
         env=[("ABLATION_DATABASE_URL", "nosuchdb://somewhere/x")]),
    case("url-not-a-url", "submit", *S, names="ABLATION_DATABASE_URL",
         env=[("ABLATION_DATABASE_URL", f"not a url, u:{SECRET}@host")]),
    case("env-max-epochs-word", "submit", *S, names="ABLATION_MAX_EPOCHS",
         env=[("ABLATION_MAX_EPOCHS", "many")]),
    case("env-max-epochs-superscript", "submit", *S, names="ABLATION_MAX_EPOCHS",
         env=[("ABLATION_MAX_EPOCHS", "\u00b2")]),
    case("env-max-image-side-zero", "submit", *S, names="ABLATION_MAX_IMAGE_SIDE",
         env=[("ABLATION_MAX_IMAGE_SIDE", "0")]),
    case("env-heartbeat-inf", "submit", *S, names="ABLATION_HEARTBEAT_SECONDS",
         env=[("ABLATION_HEARTBEAT_SECONDS", "inf")]),
    case("env-cancel-grace-nan", "runs", names="ABLATION_CANCEL_GRACE_SECONDS",
         env=[("ABLATION_CANCEL_GRACE_SECONDS", "nan")]),
    case("env-no-progress-negative", "study", "create", *S, "--factor", "bn_conv_3",
         names="ABLATION_NO_PROGRESS_SECONDS", env=[("ABLATION_NO_PROGRESS_SECONDS", "-5")]),
    case("env-start-worker", "train", *S, names="ABLATION_START_WORKER",
         env=[("ABLATION_START_WORKER", "yes")]),
]


# --- the files the cases use ---------------------------------------------------------------------
def _png(path: Path, size=(8, 8), colour=(200, 20, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _good(root: Path, classes=("cat", "dog"), splits=("train", "test"), n=2) -> Path:
    for split in splits:
        for k, label in enumerate(classes):
            for i in range(n):
                _png(root / split / label / f"{i}.png", colour=(40 * k, 100, 200 - 40 * k))
    return root


def _bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def corrupted(png: bytes) -> bytes:
    """`png` with one byte of its compressed image data flipped."""
    data = bytearray(png)
    data[png.index(b"IDAT") + 6] ^= 0xFF
    return bytes(data)


def make_folders(base: Path) -> dict[str, Path]:
    """One folder dataset per kind of problem (and `good`, which has none)."""
    f = {name: base / name for name in (
        "good", "empty", "no_test", "flat", "one_class", "only_in_test", "mismatch",
        "empty_test_class", "corrupt", "truncated_png", "truncated_jpg", "text_jpg", "zero_bytes",
        "bomb", "bomb_warning", "wide", "fifo", "dir_png")}
    _good(f["good"])
    f["empty"].mkdir()
    _good(f["no_test"], splits=("train",))
    for split in ("train", "test"):
        _png(f["flat"] / split / "0.png")
    _good(f["one_class"], classes=("cat",))
    _good(f["only_in_test"])
    _png(f["only_in_test"] / "test" / "fox" / "0.png")
    _good(f["mismatch"], classes=("cat", "dog", "bird"), splits=("train",))
    _good(f["mismatch"], classes=("cat", "dog", "fish"), splits=("test",))
    _good(f["empty_test_class"])
    for path in (f["empty_test_class"] / "test" / "dog").iterdir():
        path.unlink()
    for name in ("corrupt", "truncated_png", "truncated_jpg", "text_jpg", "zero_bytes", "bomb",
                 "bomb_warning", "wide", "fifo", "dir_png"):
        _good(f[name])
    png = (f["good"] / "train" / "cat" / "0.png").read_bytes()
    noisy = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    noisy.save(f["truncated_jpg"] / "train" / "cat" / "full.jpg", quality=95)
    noisy.save(f["truncated_png"] / "train" / "cat" / "full.png")
    _bytes(f["corrupt"] / "test" / "dog" / "bad.png", corrupted(png))
    data = (f["truncated_png"] / "train" / "cat" / "full.png").read_bytes()
    _bytes(f["truncated_png"] / "train" / "dog" / "half.png", data[: len(data) // 2])
    data = (f["truncated_jpg"] / "train" / "cat" / "full.jpg").read_bytes()
    _bytes(f["truncated_jpg"] / "test" / "cat" / "half.jpg", data[: len(data) // 2])
    _bytes(f["text_jpg"] / "train" / "dog" / "notes.jpg", b"these are my notes, not a photo\n")
    _bytes(f["zero_bytes"] / "test" / "cat" / "empty.png", b"")
    # 13500 x 13500 one-bit pixels: 182 M pixels, over twice PIL's limit (DecompressionBombError),
    # yet a 30 KB file; 10000 x 10000 is between the limit and twice it (only a warning in PIL).
    Image.new("1", (13_500, 13_500)).save(f["bomb"] / "train" / "dog" / "bomb.png")
    Image.new("1", (10_000, 10_000)).save(f["bomb_warning"] / "test" / "cat" / "bomb.png")
    _png(f["wide"] / "train" / "cat" / "wide.png", size=(1100, 8))
    os.mkfifo(f["fifo"] / "train" / "cat" / "pipe.png")
    (f["dir_png"] / "test" / "dog" / "folder.png").mkdir()
    return f


@contextlib.contextmanager
def read_only_folder(path: Path):
    """A folder this user cannot write in. As root, permissions do not stop writes, so a
    read-only tmpfs is mounted on it; if mounting is not allowed, a folder of /proc (which no
    one can create files in) stands in."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield path if mounted else Path("/proc/self/fdinfo")
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


def seed_database(home: Path) -> None:
    """A database with one queued run, as `submit` would leave it."""
    from cnn_ablation.config import RunConfig
    from cnn_ablation.jobs.launch import new_run
    from cnn_ablation.storage import runs
    from cnn_ablation.storage.engine import get_engine

    runs.create_runs(get_engine(f"sqlite:///{home / 'ablation.db'}"),
                     [new_run(RunConfig(dataset="synthetic"))])


def table(db: Path, name: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(f"select * from {name}").fetchall()


@dataclass
class Outcome:
    result: subprocess.CompletedProcess
    home: Path
    env: dict[str, str]
    before: list[tuple]  # the seeded database's runs before the command


def launch_all(plan_file: str) -> None:
    """The case runner, in a process of its own (see `outcomes`). It imports the command line
    once, then forks one child per case; the child does what `python -m cnn_ablation ARGS` does
    (runpy runs cnn_ablation/__main__.py as __main__) with the case's environment, its stdout
    and stderr going to files, an uncaught exception printed as the interpreter prints it (exit
    1). A fork costs milliseconds where a fresh interpreter costs most of a second; each case
    still has a process, an environment and caches of its own. Exit codes go to a JSON file."""
    import json
    import runpy
    import signal
    import traceback

    import cnn_ablation.cli  # noqa: F401  the imports every case would repeat, done once
    import cnn_ablation.jobs.launch  # noqa: F401
    import cnn_ablation.studies.grid  # noqa: F401

    def child(item: dict) -> None:
        code = 1
        try:
            os.environ.clear()
            os.environ.update(item["env"])
            for fd, key in ((1, "stdout"), (2, "stderr")):
                target = os.open(item[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
            sys.argv = ["cnn_ablation", *item["args"]]
            try:
                runpy.run_module("cnn_ablation", run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exc:
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            except BaseException:
                traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    plan = json.loads(Path(plan_file).read_text())
    todo, running, codes = list(plan), {}, {}
    at_once = max(2, 2 * (os.cpu_count() or 1))
    while todo or running:
        while todo and len(running) < at_once:
            item = todo.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                child(item)
            running[pid] = (item["id"], time.monotonic() + 60)
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for other, (_, deadline) in running.items():
                if time.monotonic() > deadline:  # a hung case fails with -9, not the suite
                    os.kill(other, signal.SIGKILL)
            time.sleep(0.005)
            continue
        codes[running.pop(pid)[0]] = os.waitstatus_to_exitcode(status)
    Path(plan_file + ".codes").write_text(json.dumps(codes))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> Iterator[dict[str, Outcome]]:
    """Every case run once, side by side, each with an ABLATION_HOME of its own (the read-only
    folder stays read-only until the module's tests are done)."""
    import json

    base = tmp_path_factory.mktemp("bad-input")
    places = {f"{{folder:{k}}}": str(v) for k, v in make_folders(base / "folders").items()}
    (base / "a-file").write_text("not a folder")
    (base / "garbage.db").write_bytes(b"this is not a database" * 100)
    places.update({"{tmp}": str(base), "{file}": str(base / "a-file"),
                   "{db:garbage}": str(base / "garbage.db")})
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABLATION_")}
    clean.update(CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="3")

    def fill(text: str) -> str:
        for key, value in places.items():
            text = text.replace(key, value)
        return text

    with read_only_folder(base / "read-only") as readonly:
        places["{readonly}"] = str(readonly)
        plan, found = [], {}
        for c in CASES:
            home, out = base / "homes" / c.id, base / "out" / c.id
            home.mkdir(parents=True)
            out.mkdir(parents=True)
            if c.seeded:
                seed_database(home)
            env = {**clean, "ABLATION_HOME": str(home), "ABLATION_START_WORKER": "0",
                   **{k: fill(v) for k, v in c.env}}
            args = [fill(a) for a in c.args]
            plan.append({"id": c.id, "args": args, "env": env, "stdout": str(out / "stdout"),
                         "stderr": str(out / "stderr")})
            found[c.id] = (home, out, env, args,
                           table(home / "ablation.db", "runs") if c.seeded else [])
        (base / "plan.json").write_text(json.dumps(plan))
        runner = subprocess.run(
            [sys.executable, "-c", "import sys; from tests.test_bad_input import launch_all; "
                                   "launch_all(sys.argv[1])", str(base / "plan.json")],
            cwd=ROOT, env=clean, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=600)
        assert runner.returncode == 0, runner.stderr
        codes = json.loads((base / "plan.json.codes").read_text())
        yield {cid: Outcome(subprocess.CompletedProcess(
                                args, codes[cid], (out / "stdout").read_text(),
                                (out / "stderr").read_text()), home, env, before)
               for cid, (home, out, env, args, before) in found.items()}


def test_the_table_is_large_and_its_ids_unique():
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(c: Case, outcomes):
    out = outcomes[c.id]
    result, home = out.result, out.home
    printed = result.stdout + result.stderr
    assert result.returncode == 2, printed
    assert "Traceback" not in printed, printed
    assert SECRET not in printed
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    if lines[0].startswith("usage:"):  # argparse: usage, then its one error line
        assert ": error: argument " in lines[-1], result.stderr
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert " is not allowed; allowed: " in lines[0] or "does not exist" in lines[0], lines[0]
    assert c.names in result.stderr
    assert c.says in result.stderr
    if c.seeded:  # nothing queued, cancelled or deleted: the one run is as it was
        assert table(home / "ablation.db", "runs") == out.before
        assert table(home / "ablation.db", "studies") == []
    else:  # refused before the database was opened: nothing written at all
        assert list(home.iterdir()) == [], list(home.iterdir())


# --- the New run page ----------------------------------------------------------------------------
def count(home: Path, name: str) -> int:
    db = home / "ablation.db"
    return len(table(db, name)) if db.exists() else 0


@pytest.mark.parametrize("kind,message", [
    ("missing", "found none in train"),
    ("corrupt", "bad.png: not a readable image"),
    ("one_class", "at least 2 classes"),
    ("mismatch", "only in train/: bird; only in test/: fish"),
    ("text_jpg", "notes.jpg: not a readable image"),
])
def test_new_run_page_refuses_a_bad_folder_without_a_traceback(home, kind, message):
    from streamlit.testing.v1 import AppTest

    roots = home / "folders"  # the page's default ABLATION_DATA_ROOTS
    roots.mkdir()
    path = roots / "nothing-here" if kind == "missing" else make_folders_subset(roots, kind)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.selectbox(key="data").set_value("folder:…").run()
    at.text_input(key="folder_path").set_value(str(path)).run()
    assert not at.exception, [e.message for e in at.exception]
    errors = [e.value for e in at.error]
    assert any(message in e for e in errors), errors
    launch = [b for b in at.button if b.key == "launch"]
    assert all(b.disabled for b in launch)  # no launch to press
    assert count(home, "runs") == 0


@pytest.mark.parametrize("variable,value,message", [
    pytest.param("ABLATION_MAX_EPOCHS", "5", "ABLATION_MAX_EPOCHS", id="max-epochs-below-10"),
    pytest.param("ABLATION_HOME", "{file}", "ABLATION_HOME", id="home-is-a-file"),
    pytest.param("ABLATION_DATABASE_URL", f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:1/db",
                 "ABLATION_DATABASE_URL", id="driver-missing"),
])
def test_the_pages_explain_an_unusable_environment(home, monkeypatch, variable, value, message):
    from streamlit.testing.v1 import AppTest

    (home / "a-file").write_text("not a folder")
    monkeypatch.setenv(variable, value.replace("{file}", str(home / "a-file")))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert not any(SECRET in e.value for e in at.error)


def make_folders_subset(base: Path, kind: str) -> Path:
    """Just the folder dataset `kind` of make_folders (the page tests need one each)."""
    root = base / kind
    if kind == "one_class":
        return _good(root, classes=("cat",))
    if kind == "mismatch":
        _good(root, classes=("cat", "dog", "bird"), splits=("train",))
        return _good(root, classes=("cat", "dog", "fish"), splits=("test",))
    _good(root)
    if kind == "corrupt":
        _bytes(root / "test" / "dog" / "bad.png",
               corrupted((root / "train" / "cat" / "0.png").read_bytes()))
    if kind == "text_jpg":
        _bytes(root / "train" / "dog" / "notes.jpg", b"these are my notes, not a photo\n")
    return root


# --- the Studies page ----------------------------------------------------------------------------
@pytest.mark.parametrize("settings,message", [
    pytest.param({"study_val_split": 1.0},
                 "val_split: 1.0 is not allowed; allowed: a number in [0, 1)", id="val-split-1"),
    pytest.param({"study_val_split": -0.1}, "val_split: -0.1 is not allowed", id="val-split-neg"),
    pytest.param({"study_lr": 0.0}, "learning_rate: 0.0 is not allowed; allowed: a number > 0",
                 id="lr-zero"),
    pytest.param({"study_seeds": 5, "study_adaptive": True, "study_max_seeds": 3},
                 "max seeds: 3 is not allowed; allowed: a whole number >= the starting seeds "
                 "per cell (5)", id="max-seeds-below-seeds"),
    pytest.param({"study_dataset": "synthetic", "study_limit_train": 20, "study_val_split": 0.5,
                  "study_bn_factors": ["bn_conv_3"]},
                 "batch_size: 32 is not allowed; allowed: a whole number from 1 to 10",
                 id="limit-leaves-fewer-images-than-a-batch"),
])
def test_the_studies_page_refuses_bad_study_settings_naming_the_field(home, settings, message):
    """The study settings New run also has (validation split, training-image limit, learning
    rate) and the adaptive rule: refused on the page with the field named, nothing queued."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("cnn_ablation/ui/studies.py").run()
    for key, value in settings.items():
        widget = next(w for kind in ("number_input", "toggle", "selectbox", "multiselect")
                      for w in getattr(at, kind) if w.key == key)
        widget.set_value(value)
        at.run()
    assert not at.exception, [e.message for e in at.exception]
    shown = [e.value for e in at.error]  # as soon as the value is in, or on a start button
    starts = [b.key for b in at.button
              if b.key and (b.key.startswith("preset_") or b.key == "start_custom")]
    for key in starts:
        at.button(key=key).click()
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        shown += [e.value for e in at.error]
    unescaped = [e.replace("\\", "") for e in shown]  # the page escapes Markdown: `\>=`
    assert any(message in e for e in unescaped), shown
    assert count(home, "runs") == 0 and count(home, "studies") == 0


# --- the harness against the plain command line, and good input beside the bad ------------------
PLAIN = ["seed-2-to-the-32", "name-escape", "folder-corrupt-png", "show-zero",
         "url-unknown-driver", "home-read-only"]


@pytest.mark.parametrize("case_id", PLAIN)
def test_a_fresh_interpreter_says_exactly_the_same(case_id, outcomes):
    """The table's runner forks a process that has the modules imported already; a sample of
    cases run as `python -m cnn_ablation` in a fresh interpreter must give the same result."""
    out = outcomes[case_id]
    before = sorted(out.home.iterdir())
    plain = subprocess.run([sys.executable, "-m", "cnn_ablation", *out.result.args], cwd=ROOT,
                           env=out.env, capture_output=True, text=True, timeout=120)
    assert (plain.returncode, plain.stdout, plain.stderr) == (
        out.result.returncode, out.result.stdout, out.result.stderr)
    assert sorted(out.home.iterdir()) == before


def test_good_input_beside_the_bad_is_accepted(home, cli, tmp_path):
    root = _good(tmp_path / "pets")
    ok = cli("submit", "--dataset", f"folder:{root}", "--batch-size", "1", "--image-size", "16x8",
             "--seed", str(2**32 - 1), "--epochs", "1000", "--name", "ünïcode · " + "n" * 190)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["1"]
    assert count(home, "runs") == 1
