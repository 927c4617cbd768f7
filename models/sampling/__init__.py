"""Diffusion schedules and denoisers, samplers (pure functions over a denoiser), guidance and
thresholding, conditioning augmentation, and the stage loop every family samples through."""
