"""The reference pipelines behind one interface (DESIGN.md, "The one interface"), lowest first:
`core` (interface, seeding, family registry, checkpoints), `networks` (UNet, Efficient U-Net,
DiT, autoencoders, text encoders, reference CLIP, ...), `sampling` (schedules, samplers,
guidance, conditioning augmentation, the shared stage loop) and `families` (one module per
pipeline family). Training lives in `bench.training.families`."""
