"""User ids by name, cached per process with an expiry: known names and unknown ones.

Remembering unknown names too keeps a request that names a made-up user (a follow
of nobody, repeated) free of database work after its first 404. A user created
meanwhile is found once the "unknown" entry expires (NAME_CACHE_S); users are never
renamed or deleted, so a known name's id stays right.
"""
from __future__ import annotations

import threading

from cachetools import TTLCache
from sqlalchemy import Engine

from tasks.demo.errors import UnknownUser
from tasks.demo.timeline import user_id

CACHE_SIZE = 65_536
NAME_CACHE_S = 30

_lock = threading.Lock()
_ids: TTLCache = TTLCache(CACHE_SIZE, ttl=NAME_CACHE_S)


def resolve(eng: Engine, name: str) -> int:
    """The id; UnknownUser for a name no one has (remembered for NAME_CACHE_S)."""
    key = (id(eng), name)
    with _lock:
        found = _ids.get(key, False)
    if found is False:
        with eng.connect() as conn:
            try:
                found = user_id(conn, name)
            except UnknownUser:
                found = None
        with _lock:
            _ids[key] = found
    if found is None:
        raise UnknownUser(name)
    return found


def forget(eng: Engine, name: str) -> None:
    """Drop a cached entry (a user just created here is no longer unknown)."""
    with _lock:
        _ids.pop((id(eng), name), None)
