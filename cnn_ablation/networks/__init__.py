"""Networks: the chapter's network built from its layer table (`model`), your own `.keras` files
and builder functions (`registry`), their BatchNorm/Dropout switches (`surgery`), and the probe
that inspects an uploaded network in a child process (`probe`).

May import: `cnn_ablation.config`, `cnn_ablation.architecture`, `cnn_ablation.settings`, keras
(inside functions, never at import time: the web app imports the registry but never Keras).
"""
