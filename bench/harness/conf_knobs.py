"""Diagnostic setting overrides for bench workers, from ``BENCH_CONF="key=value,key=value"``.

Values are Python literals (``False``, ``64``, ``'solo'``). Used by the (e)
diagnostics to change one Celery setting at a time on either app.
"""
from __future__ import annotations

import ast
import os


def overrides() -> dict:
    text = os.environ.get("BENCH_CONF", "")
    pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
    return {key.strip(): ast.literal_eval(value.strip()) for key, value in pairs}


def apply(app) -> None:
    app.conf.update(overrides())
