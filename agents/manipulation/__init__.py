"""bc_diffusion's own code: config and dataset generation."""
