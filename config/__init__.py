"""Floodgate configuration; ``celery -A config`` finds the app here."""
from config.celery_app import app

__all__ = ("app",)
