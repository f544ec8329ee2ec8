"""Floodgate configuration; ``celery -A config`` finds the app here.

The app is built on first use of ``config.app``, so importing ``config.queues`` or
``config.settings`` alone builds nothing and reads no environment.
"""


def __getattr__(name: str):
    if name == "app":
        from config.celery_app import app

        return app
    raise AttributeError(f"module 'config' has no attribute {name!r}")


__all__ = ("app",)
