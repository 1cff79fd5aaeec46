"""Models, codecs, JPEG proxy, trainer, metrics and baselines. Knows nothing of Optuna or shrink.search."""
