"""The dashboard's script inside the installed package (what `cnn-ablation dashboard` serves,
through server.py); the repository's `app.py` is the same two lines."""

from cnn_ablation.ui.main import main

main()
