"""Who is calling: a bearer API key (``Authorization: Bearer fg_<key_id>_<secret>``).

Every route but ``POST /users`` and ``GET /healthz`` depends on :data:`CurrentUser`,
which runs before anything else the route does (admission included), so a request
without a valid key costs no broker round trip and no row.

Cost per request, cheapest first (docs/app/security.md gives the measurements): a
key seen in the last AUTH_CACHE_S is checked against the cached hash, with no I/O
(a key in use is read again in the background before its entry expires); a made-up
key fails its HMAC-signed id, also with no I/O; only a key not seen for that long
costs one indexed query, in a thread, shared by every request that waits for it.
Unknown and revoked keys are cached too, so repeating one stays cheap.

Another identity provider plugs in here: replace :meth:`KeyBearer.__call__` with one that
verifies its token (e.g. a JWT with PyJWT against the provider's JWKS) and maps its
subject to a user row; the routes only see :class:`Principal`.
"""
from __future__ import annotations

import asyncio
import hmac
import threading
from dataclasses import dataclass
from typing import Annotated

from cachetools import TTLCache
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from config.settings import get_settings
from tasks.demo import keys
from tasks.demo.db import engine
from tasks.demo.errors import Unauthenticated

#: Keys remembered per process (found, unknown or revoked), each for AUTH_CACHE_S.
CACHE_SIZE = 100_000
API_KEY_MAX = 200  # longer than any key this API makes
#: A key in use is read again in the background once its entry is this old (a fraction
#: of AUTH_CACHE_S), so it never expires under the requests that use it.
REFRESH_AFTER = 0.5

_lock = threading.Lock()
_cache: TTLCache | None = None
_inflight: dict[str, asyncio.Future] = {}


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    user_id: int
    name: str
    key_id: str


def signing_key() -> bytes:
    secret = get_settings().api_key_secret
    if secret is None:  # the API refuses to start without it (api/main.py)
        raise RuntimeError("API_KEY_SECRET is not set")
    return secret.get_secret_value().encode()


def _entries() -> TTLCache:
    global _cache
    if _cache is None:
        _cache = TTLCache(CACHE_SIZE, ttl=get_settings().auth_cache_s)
    return _cache


#: What :func:`forget` leaves: refused as revoked, whatever secret comes with it.
_REVOKED_HERE = keys.StoredKey(0, "", "", True)


def _remember(key_id: str, found: keys.StoredKey | None, as_of: float) -> None:
    with _lock:
        cache = _entries()
        entry = cache.get(key_id)
        if entry is None or entry[1] <= as_of:  # a read begun before a revoke here loses
            cache[key_id] = (found, as_of)


def forget(key_id: str) -> None:
    """Refuse a key in this process at once (after revoking it here)."""
    with _lock:
        cache = _entries()
        cache[key_id] = (_REVOKED_HERE, cache.timer())


def _lookup(key_id: str) -> keys.StoredKey | None:
    started = _entries().timer()
    with engine().connect() as conn:
        found = keys.find_key(conn, key_id)
    _remember(key_id, found, started)
    return found


def _load(key_id: str) -> asyncio.Future:
    """One lookup per key at a time: requests arriving meanwhile share it, so a key
    whose entry expired under load costs one query, not one per request."""
    pending = _inflight.get(key_id)
    if pending is None or pending.get_loop() is not asyncio.get_running_loop():
        pending = asyncio.ensure_future(run_in_threadpool(_lookup, key_id))
        _inflight[key_id] = pending
        pending.add_done_callback(lambda done: _settled(key_id, done))
    return pending


def _settled(key_id: str, done: asyncio.Future) -> None:
    if _inflight.get(key_id) is done:
        del _inflight[key_id]
    if not done.cancelled():
        done.exception()  # retrieved: a failed background read keeps the entry it had


async def _stored(key_id: str) -> keys.StoredKey | None | bool:
    """The key's row as cached (refreshed ahead of expiry), or as read now; False when
    its id is not one this service signed (checked only for ids not cached)."""
    with _lock:
        cache = _entries()
        entry, now = cache.get(key_id), cache.timer()
    if entry is not None:
        found, checked_at = entry
        if now - checked_at >= REFRESH_AFTER * cache.ttl:
            _load(key_id)  # in the background; this request uses the entry it has
        return found
    if not keys.signed(key_id, signing_key()):
        return False
    return await asyncio.shield(_load(key_id))  # a client gone does not cancel the read


class KeyBearer(HTTPBearer):
    """The bearer scheme and the key check in one dependency: a nested one cost FastAPI
    about 19 µs a request (bench/RESULTS.md, auth)."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        scheme, api_key = get_authorization_scheme_param(request.headers.get("authorization"))
        if not api_key or scheme.lower() != "bearer":
            raise Unauthenticated("this request needs an API key")
        parts = keys.split(api_key) if len(api_key) <= API_KEY_MAX else None
        found = await _stored(parts[0]) if parts else False
        if found is _REVOKED_HERE:
            raise Unauthenticated("the API key was revoked")
        if not found or not hmac.compare_digest(found.secret_sha256, keys.digest(parts[1])):
            raise Unauthenticated("the API key is not one this service issued")
        if found.revoked:
            raise Unauthenticated("the API key was revoked")
        return Principal(found.user_id, found.name, parts[0])


class OpsBearer(HTTPBearer):
    """The operations routes (/metrics, /healthz/details) take OPS_TOKEN, not a user key."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        scheme, given = get_authorization_scheme_param(request.headers.get("authorization"))
        token = get_settings().ops_token
        if token is None or scheme.lower() != "bearer" or not hmac.compare_digest(
                given.encode(), token.get_secret_value().encode()):
            raise Unauthenticated("this operations route needs another credential",
                                  "send 'Authorization: Bearer <OPS_TOKEN>'")


user_key = KeyBearer(scheme_name="APIKey", description="an API key from POST /users or POST /keys")
CurrentUser = Annotated[Principal, Depends(user_key)]
require_ops = OpsBearer(scheme_name="OpsToken", description="OPS_TOKEN")
