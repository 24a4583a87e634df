"""Fixtures: placeholder."""
