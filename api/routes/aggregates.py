from __future__ import annotations

from fastapi import APIRouter

from api.auth import CurrentUser
from api.deps import Limit, iso
from api.schemas import Aggregates
from tasks.demo.aggregates import recent_windows
from tasks.demo.db import engine

router = APIRouter(tags=["aggregates"])


@router.get("/aggregates", response_model=Aggregates)
def get_aggregates(_: CurrentUser, limit: Limit = 24) -> dict:
    """Windows computed ahead of time by beat; this only reads them."""
    with engine().connect() as conn:
        rows = recent_windows(conn, limit)
    return {
        "windows": [
            {
                "window_start": iso(r["window_start"]),
                "window_end": iso(r["window_end"]),
                "posts": r["posts"],
                "top_hashtags": r["top_hashtags"],
            }
            for r in rows
        ]
    }
