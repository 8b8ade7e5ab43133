"""Metric families, registered by name."""
