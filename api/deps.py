"""Shared request pieces. Routes open their own transactions, so a commit
always happens before the response it backs is sent."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query

Limit = Annotated[int, Query(ge=1, le=200, description="how many items, 1..200")]


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()
