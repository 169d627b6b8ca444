"""Pytest plugin: media fixtures (filled in by its owner)."""
