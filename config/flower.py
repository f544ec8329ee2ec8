"""Flower reads FLOWER_* itself; Floodgate refuses to start it open or on every interface."""
from __future__ import annotations

import os

from config.settings import ConfigError, get_settings


def secure_flower() -> None:
    auth = get_settings().flower_basic_auth
    if not auth:
        raise ConfigError(
            "Floodgate configuration error: FLOWER_BASIC_AUTH is required to run Flower "
            "(user:password); Flower would otherwise serve its UI and API without credentials."
        )
    # Flower reads FLOWER_BASIC_AUTH itself; FLOWER_BASIC_AUTH_FILE reaches it from here.
    os.environ.setdefault("FLOWER_BASIC_AUTH", auth.get_secret_value())
    os.environ.setdefault("FLOWER_ADDRESS", "127.0.0.1")
    os.environ.setdefault("FLOWER_PORT", str(get_settings().flower_port))
