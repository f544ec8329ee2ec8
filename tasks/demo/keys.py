"""API keys: plain functions over the ``api_keys`` table. No HTTP.

A key reads ``fg_<key_id>_<secret>``. ``key_id`` is 16 random hex digits and a
16-digit HMAC of them under API_KEY_SECRET, so a made-up key is refused by
arithmetic alone, before any query (api/auth.py). Only the SHA-256 of the secret
is stored: the key is shown once, when it is made. A fast hash is enough here,
unlike for passwords: the secret is 256 random bits, not something a person chose.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import NamedTuple

from sqlalchemy import func, select, update

from tasks.demo.models import api_keys, users

PREFIX = "fg"
KEY_ID_RANDOM_HEX = 16
KEY_ID_TAG_HEX = 16
SECRET_BYTES = 32


class StoredKey(NamedTuple):
    user_id: int
    name: str
    secret_sha256: str
    revoked: bool


def sign(key_id_random: str, signing_key: bytes) -> str:
    tag = hmac.new(signing_key, key_id_random.encode(), hashlib.sha256).hexdigest()
    return key_id_random + tag[:KEY_ID_TAG_HEX]


def signed(key_id: str, signing_key: bytes) -> bool:
    """True if ``key_id`` was made with this signing key (constant time)."""
    if len(key_id) != KEY_ID_RANDOM_HEX + KEY_ID_TAG_HEX or not key_id.isascii():
        return False  # compare_digest takes ASCII text only
    return hmac.compare_digest(sign(key_id[:KEY_ID_RANDOM_HEX], signing_key), key_id)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split(api_key: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None."""
    prefix, sep, rest = api_key.partition("_")
    key_id, sep2, secret = rest.partition("_")
    if prefix != PREFIX or not sep or not sep2 or not key_id or not secret:
        return None
    return key_id, secret


def create_key(conn, user_id: int, signing_key: bytes) -> tuple[str, str]:
    """Store a new key for this user; returns (key_id, api_key). Shown once."""
    key_id = sign(secrets.token_hex(KEY_ID_RANDOM_HEX // 2), signing_key)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    conn.execute(api_keys.insert().values(
        id=key_id, user_id=user_id, secret_sha256=digest(secret), created_at=time.time()))
    return key_id, f"{PREFIX}_{key_id}_{secret}"


def find_key(conn, key_id: str) -> StoredKey | None:
    row = conn.execute(
        select(api_keys.c.user_id, users.c.name, api_keys.c.secret_sha256, api_keys.c.revoked_at)
        .join(users, users.c.id == api_keys.c.user_id)
        .where(api_keys.c.id == key_id)
    ).first()
    if row is None:
        return None
    return StoredKey(row.user_id, row.name, row.secret_sha256, row.revoked_at is not None)


def revoke_key(conn, user_id: int, key_id: str) -> bool:
    """Revoke one of this user's keys; False if it is not theirs or not live."""
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.user_id == user_id,
               api_keys.c.revoked_at.is_(None))
        .values(revoked_at=time.time())
    )
    return result.rowcount == 1


def live_keys(conn, user_id: int) -> int:
    return conn.execute(select(func.count()).where(
        api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))).scalar_one()


def list_keys(conn, user_id: int, limit: int = 100) -> list[dict]:
    """The user's newest keys, live and revoked, newest first."""
    rows = conn.execute(
        select(api_keys.c.id, api_keys.c.created_at, api_keys.c.revoked_at)
        .where(api_keys.c.user_id == user_id)
        .order_by(api_keys.c.created_at.desc()).limit(limit)
    )
    return [{"key_id": r.id, "created_at": r.created_at, "revoked_at": r.revoked_at} for r in rows]
