"""Per-family training plug-ins for the generic trainer (bench.training.trainable.TRAINING_MODULES)."""
