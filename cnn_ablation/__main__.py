"""`python -m cnn_ablation ...`: the command line lives in `cnn_ablation.cli`."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any TensorFlow import

if sys.argv[1:2] == ["execute"]:  # a training process: SIGTERM means "back to the queue" at once
    from cnn_ablation.jobs import exit_codes

    exit_codes.catch_sigterm_while_starting()

from cnn_ablation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
