"""Interface, per-sample seeding, the family registry and checkpoints: what every family builds on."""
