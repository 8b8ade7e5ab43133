"""The web viewer: server-rendered pages over the store, served under ``/ui/``."""
