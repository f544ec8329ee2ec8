"""Authors' ids, cached in-process: users are never renamed or deleted, so a known
name's id holds for good. The cache keeps a refusal free of database work."""
from __future__ import annotations

from sqlalchemy import Engine

from tasks.demo.timeline import user_id

CACHE_SIZE = 65_536

_ids: dict[tuple[Engine, str], int] = {}


def peek(eng: Engine, name: str) -> int | None:
    """The cached id, without any I/O; None if not cached (unknown or not looked up yet)."""
    return _ids.get((eng, name))


def resolve(eng: Engine, name: str) -> int:
    """The id, read once per process; an unknown name raises UnknownUser (not cached)."""
    found = _ids.get((eng, name))
    if found is None:
        with eng.connect() as conn:
            found = user_id(conn, name)
        if len(_ids) >= CACHE_SIZE:
            _ids.clear()
        _ids[(eng, name)] = found
    return found
