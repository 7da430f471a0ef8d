"""cnn-ablation: ablation studies of the chapter's CNN (see README.md)."""
