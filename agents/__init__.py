"""mambazoo agents."""
