"""Everything on disk in one package: crash-safe files (``files``), tensor trees, the weights' header checks,
our checkpoint format, the training checkpointer, the run directory and ``load`` (any model source)."""
