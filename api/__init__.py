"""Floodgate's HTTP front door (FastAPI)."""
