"""Data: a dataset's name -> uint8 arrays and class names, offline where possible.

- `datasets`: what a name means, whether it is here, whether a config fits it; loading, cached.
- `arrays`: a dataset as held (`DatasetInfo`, aligned uint8 arrays), `DatasetUnavailable`.
- `builtin`: Keras' loaders, Debian's Fashion-MNIST, the synthetic set.
- `folders`: `folder:<path>` datasets: scan, checks, digest, loading.

May import: `cnn_ablation.config`, `cnn_ablation.settings`, numpy, PIL, keras (inside functions:
the web app imports this package and never Keras).
"""
