"""Networks as nn.Modules, each registered as a checkpoint network type (models.core.checkpoint)."""
