"""One module per pipeline family; each registers its builder with models.core.registry."""
