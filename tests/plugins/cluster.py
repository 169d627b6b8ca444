"""Pytest plugin: cluster fixtures (filled in by its owner)."""
