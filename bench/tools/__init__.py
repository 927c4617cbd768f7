"""Command-line tools around the models: prompt alignment, reference-CLIP training, latent grids."""
