"""Panda push / pick-and-place and its scripted expert."""
