"""Teacher plugins: a masked diffusion model with its token grid, conditions, decoder and data."""
