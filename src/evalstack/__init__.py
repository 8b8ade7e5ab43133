"""evalstack: an evaluation service for language models."""

__version__ = "0.1.0"
