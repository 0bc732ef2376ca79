"""bc_navigation's own code: config, dataset generation, batches."""
