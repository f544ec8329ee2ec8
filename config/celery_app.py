"""The Celery app. Task modules are named as strings; Celery imports them."""
from __future__ import annotations

import os
import sys

from celery import Celery

from config.settings import ConfigError, get_settings

app = Celery("floodgate", include=["tasks.fanout", "tasks.signals", "scheduler.tasks"])
app.config_from_object("config.celeryconfig")


def _secure_flower() -> None:
    """Flower reads FLOWER_* itself; refuse to start it open or on every interface."""
    auth = get_settings().flower_basic_auth
    if not auth:
        raise ConfigError(
            "Floodgate configuration error: FLOWER_BASIC_AUTH is required to run Flower "
            "(user:password); Flower would otherwise serve its UI and API without credentials."
        )
    os.environ.setdefault("FLOWER_ADDRESS", "127.0.0.1")
    os.environ.setdefault("FLOWER_PORT", str(get_settings().flower_port))


if "flower" in sys.argv[1:]:
    _secure_flower()
