"""What every command shares: the run-config flags, the engine, a quiet Keras import."""

from __future__ import annotations

import argparse
import os
import sys

from sqlalchemy import Engine

from cnn_ablation.architecture import PRESETS
from cnn_ablation.config import ConfigError, RunConfig, defaults, parse_bn
from cnn_ablation.settings import database_error, settings, storage_problem


def config_flags(p: argparse.ArgumentParser, with_seeds: bool = False) -> None:
    # The defaults as declared, not RunConfig(): building one checks its values against the
    # settings, and a parser that cannot be built could not even say what is wrong.
    d = defaults()
    p.add_argument("--preset", choices=list(PRESETS), default=d.preset)
    p.add_argument("--dataset", default=None,
                   help="cifar10 | cifar100 | mnist | fashion_mnist | synthetic[:N] | "
                        "folder:PATH (default: cifar10 for training; summary uses the "
                        "chapter's input shape)")
    p.add_argument("--bn", default=None, help="BatchNorm per position as 0/1, e.g. 1,0,0,0,1 "
                                              "(conv_1..conv_4, dense_1); default all on")
    p.add_argument("--dropout", type=dropout_value, default=d.dropout,
                   help="in [0, 1); for your own network, per Dropout layer: NAME=RATE,...")
    p.add_argument("--network", default=None,
                   help="your own network: a .keras file's name in $ABLATION_HOME/networks, "
                        "a builder MODULE:build_x from ABLATION_NETWORK_PATHS, or a key "
                        "(file:NAME@HASH); default: --preset")
    p.add_argument("--bn-off", default="", help="your own network: BatchNorm layers to switch "
                                                "off, by name, e.g. bn_3,bn_7")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.learning_rate, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--val-split", type=float, default=d.val_split)
    p.add_argument("--limit-train", type=int, default=None, help="use the first N train images")
    p.add_argument("--image-size", default=None, help="HxW for folder: datasets, e.g. 64x64")
    p.add_argument("--name", default="", help="a name to find the run by")
    if with_seeds:
        p.add_argument("--seeds", type=int, default=1,
                       help="queue N repeats with seeds 0..N-1 (default 1: just --seed)")


def dropout_value(text: str) -> float | tuple[tuple[str, float], ...]:
    """`--dropout 0.3` (the chapter's network), or `dropout_1=0.3,dropout_2=0.1` (your own)."""
    if "=" not in text:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    pairs = []
    for item in text.split(","):
        name, _, rate = item.partition("=")
        try:
            pairs.append((name.strip(), float(rate)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid NAME=RATE value: {item!r}") from None
    return tuple(pairs)


def config_from_args(args: argparse.Namespace, default_dataset: str = "cifar10") -> RunConfig:
    """The RunConfig the flags describe (ConfigError naming the flag's field if invalid)."""
    size = None
    if args.image_size is not None:  # given, even empty: "" is refused, not taken as "none"
        try:
            height, width = (int(v) for v in args.image_size.lower().split("x"))
            size = (height, width)
        except ValueError:
            raise ConfigError("image_size", args.image_size, "HxW, e.g. 64x64") from None
    dataset = default_dataset if args.dataset is None else args.dataset
    if args.network is not None:
        from cnn_ablation.networks.registry import find

        if args.bn is not None:
            raise ConfigError("bn", args.bn, "nothing with --network: use --bn-off NAME,...")
        rates = args.dropout if isinstance(args.dropout, tuple) else ()
        return RunConfig(
            network=find(args.network).key, dataset=dataset,
            bn_off=tuple(n.strip() for n in args.bn_off.split(",") if n.strip()),
            layer_dropout=rates, epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.lr, seed=args.seed, val_split=args.val_split,
            limit_train=args.limit_train, image_size=size)
    if args.bn_off or isinstance(args.dropout, tuple):
        raise ConfigError("bn_off" if args.bn_off else "dropout", args.bn_off or args.dropout,
                          "--bn-off and --dropout NAME=RATE name layers of --network only")
    return RunConfig(
        preset=args.preset, dataset=dataset,
        bn=None if args.bn is None else parse_bn(args.bn, args.preset),
        dropout=args.dropout, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, seed=args.seed, val_split=args.val_split,
        limit_train=args.limit_train, image_size=size,
    )


# --- helpers --------------------------------------------------------------------------------------
def quiet_keras_import() -> None:
    """TensorFlow prints start-up lines on stderr before its log level applies; hide just those."""
    if "keras" in sys.modules:
        return
    from cnn_ablation.jobs.slots import detect_gpus

    if not detect_gpus():  # CPU-only: skip TensorFlow's failing CUDA probe and its error line
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # its only remaining line is the CUDA probe
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def open_existing_engine(what: str) -> Engine:
    """The database for a command that needs a run or study already there (show, cancel,
    retry, delete, label, study ...): a SQLite file that does not exist yet is not made (an
    empty database would be left behind for nothing); NotFound (exit 2) says so."""
    from sqlalchemy.engine import make_url

    from cnn_ablation.storage.records import NotFound

    current = settings()
    try:
        url = make_url(current.database_url)
    except Exception:  # refused with its variable named by open_engine
        return open_engine()
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not os.path.exists(url.database):
        raise NotFound(f"{what} does not exist: there is no database at {url.database} yet "
                       "(ABLATION_HOME / ABLATION_DATABASE_URL); runs and studies are made by "
                       "submit, train or study create")
    return open_engine()


def open_engine() -> Engine:
    """The database (made on first use). A home or URL that cannot be used is refused first,
    naming the variable (SettingsError, exit 2): commands validate their input before calling
    this, so a refused command writes nothing."""
    from sqlalchemy.exc import SQLAlchemyError

    from cnn_ablation.storage import get_engine

    current = settings()
    problem = storage_problem(current)
    if problem is not None:
        raise problem
    try:
        return get_engine(current.database_url)
    except (OSError, ImportError, SQLAlchemyError) as exc:
        raise database_error(exc, current) from exc


