"""Pytest plugin: s3 fixtures (filled in by its owner)."""
