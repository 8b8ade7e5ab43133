"""Model clients: OpenAI-compatible HTTP endpoints and the embedded model."""
