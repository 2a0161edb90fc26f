"""psdiff: person search with PSDiff, a diffusion model over boxes and ReID embeddings."""

__version__ = "0.1.0"
