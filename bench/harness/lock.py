"""One bench run at a time: runs share Redis db 10 and the bench vhost, and a second
run's resets would spoil the first one's figures. The lock is a key in db 10 that
resets keep; it expires on its own if a run is killed."""
from __future__ import annotations

import os
import socket
import time

from bench.harness.broker import redis_client

KEY = "bench:lock"
TTL_S = 1800


def holder() -> str:
    since = time.strftime("%H:%M:%S")
    return f"{socket.gethostname()} pid {os.getpid()} in {os.getcwd()} since {since}"


def acquire() -> str:
    me = holder()
    if not redis_client().set(KEY, me, nx=True, ex=TTL_S):
        other = (redis_client().get(KEY) or b"?").decode()
        raise SystemExit(f"another bench run holds {KEY} in Redis db 10 ({other}); two runs "
                         "would spoil each other's figures. Wait for it, or delete the key "
                         "if that run is gone.")
    return me


def refresh(me: str) -> None:
    client = redis_client()
    if client.get(KEY) in (None, me.encode()):
        client.set(KEY, me, ex=TTL_S)


def release(me: str) -> None:
    client = redis_client()
    if client.get(KEY) == me.encode():
        client.delete(KEY)
