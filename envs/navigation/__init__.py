"""T-maze navigation: maps, renderer, expert."""
