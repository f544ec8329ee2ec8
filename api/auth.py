"""Who is calling: a bearer API key (``Authorization: Bearer fg_<key_id>_<secret>``).

Every route but ``POST /users`` and ``GET /healthz`` depends on :data:`CurrentUser`,
which runs before anything else the route does (admission included), so a request
without a valid key costs no broker round trip and no row.

Cost per request, cheapest first (docs/app/security.md gives the measurements):
a made-up key fails its HMAC-signed id, on the event loop, with no I/O; a key seen
in the last AUTH_CACHE_S is checked against the cached hash, also with no I/O; only
a key not seen for that long costs one indexed query, in a thread. Unknown and
revoked keys are cached too, so repeating one stays cheap.

Another identity provider plugs in here: replace :func:`_principal` with one that
verifies its token (e.g. a JWT with PyJWT against the provider's JWKS) and maps its
subject to a user row; the routes only see :class:`Principal`.
"""
from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from typing import Annotated

from cachetools import TTLCache
from fastapi import Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from config.settings import get_settings
from tasks.demo import keys
from tasks.demo.db import engine
from tasks.demo.errors import Unauthenticated

#: Keys remembered per process (found, unknown or revoked), each for AUTH_CACHE_S.
CACHE_SIZE = 100_000
API_KEY_MAX = 200  # longer than any key this API makes

_bearer = HTTPBearer(auto_error=False, description="an API key from POST /users or POST /keys")
_lock = threading.Lock()
_cache: TTLCache | None = None


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


def _cached(key_id: str) -> keys.StoredKey | None | bool:
    """The cached entry; False when the key is not cached (None: cached as unknown)."""
    with _lock:
        return _entries().get(key_id, False)


def _remember(key_id: str, found: keys.StoredKey | None) -> None:
    with _lock:
        _entries()[key_id] = found


def forget(key_id: str) -> None:
    """Drop a key from this process's cache (after revoking it here)."""
    with _lock:
        _entries().pop(key_id, None)


def _lookup(key_id: str) -> keys.StoredKey | None:
    with engine().connect() as conn:
        found = keys.find_key(conn, key_id)
    _remember(key_id, found)
    return found


async def _principal(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthenticated("this request needs an API key")
    api_key = credentials.credentials
    parts = keys.split(api_key) if len(api_key) <= API_KEY_MAX else None
    if parts is None or not keys.signed(parts[0], signing_key()):
        raise Unauthenticated("the API key is not one this service issued")
    key_id, secret = parts
    found = _cached(key_id)
    if found is False:
        found = await run_in_threadpool(_lookup, key_id)
    if found is None or not hmac.compare_digest(found.secret_sha256, keys.digest(secret)):
        raise Unauthenticated("the API key is not one this service issued")
    if found.revoked:
        raise Unauthenticated("the API key was revoked")
    return Principal(found.user_id, found.name, key_id)


CurrentUser = Annotated[Principal, Depends(_principal)]


async def require_ops(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """The operations routes (/metrics, /healthz/details) take OPS_TOKEN, not a user key."""
    token = get_settings().ops_token
    given = credentials.credentials.encode() if credentials else b""
    if token is None or not hmac.compare_digest(given, token.get_secret_value().encode()):
        raise Unauthenticated("this operations route needs another credential",
                              "send 'Authorization: Bearer <OPS_TOKEN>'")
