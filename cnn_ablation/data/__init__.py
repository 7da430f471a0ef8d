"""Data: a dataset's name -> uint8 arrays and class names, from Keras' loaders, Debian's
Fashion-MNIST, a folder of images or the synthetic set, with a cache keyed by the source.

May import: `cnn_ablation.config`, `cnn_ablation.settings`, numpy, PIL, keras (inside functions).
"""
