"""mambazoo benchmarks."""
