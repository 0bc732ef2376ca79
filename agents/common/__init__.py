"""Shared run glue for agent scripts."""
