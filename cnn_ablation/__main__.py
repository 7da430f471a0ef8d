"""`python -m cnn_ablation ...`: the command line lives in `cnn_ablation.cli`."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any TensorFlow import

from cnn_ablation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
