"""(auth) The key check in process: µs per call of api/auth.py's dependency, bare and
wired into a FastAPI route (run by bench/experiments/exp_auth.py in a fresh interpreter).

    python -m bench.harness.auth_micro '[REPS, N_FAST, N_MISS]' OUT.json

Bare: ``auth.user_key(request)`` (KeyBearer: the Authorization header, the key's cached
entry, the HMAC of its id only when not cached, the hash compare) on a fresh Starlette
request per call. Through FastAPI: an ASGI call of a small app holding the real
dependency (``me: CurrentUser``) and the API's own 401 handler, beside the same route
without it. Needs DATABASE_URL (a migrated database) and API_KEY_SECRET.
"""
# No ``from __future__ import annotations`` here: FastAPI resolves a string annotation in
# the route function's module globals, where a route defined inside a function cannot see
# its ``CurrentUser``; ``me`` then became a required query parameter, every call a 422,
# and the key check never ran (the first measurements of this bench, before the statuses
# were checked).
import asyncio
import json
import os
import secrets
import sys
import time
from pathlib import Path

MICRO_CASES = ("baseline", "cached", "forged", "missing", "miss")
#: Through FastAPI: a route with ``me: CurrentUser`` against the same route without it
#: (200), and against one that raises the same 401 without checking anything; and a
#: route awaiting ``auth.user_key(request)`` in its body (no FastAPI dependency at all).
APP_CASES = ("plain_200", "authed_200_cached", "inline_200_cached", "raise_401",
             "authed_401_forged", "authed_401_missing")
#: The status each FastAPI case must answer, or its figure measures some other path.
APP_STATUS = {"plain_200": 200, "authed_200_cached": 200, "inline_200_cached": 200,
              "raise_401": 401,
              "authed_401_forged": 401, "authed_401_missing": 401}
#: What each case's "net" column subtracts: the same call without the key check.
NET_OF = {"baseline": None, **{c: "baseline" for c in MICRO_CASES if c != "baseline"},
          "plain_200": None, "authed_200_cached": "plain_200",
          "inline_200_cached": "plain_200", "raise_401": None,
          "authed_401_forged": "raise_401", "authed_401_missing": "raise_401"}


async def measure(reps: int, n_fast: int, n_miss: int) -> dict:
    """µs per call of each case, one list per case (a value per repetition); cases
    interleaved, rotated every repetition. "miss" empties the cache before each call."""
    from starlette.requests import Request

    from api import auth
    from tasks.demo import keys
    from tasks.demo.db import engine
    from tasks.demo.errors import Unauthenticated
    from tasks.demo.timeline import create_user

    with engine().begin() as conn:
        uid = create_user(conn, f"micro{os.getpid()}")
        _, api_key = keys.create_key(conn, uid, auth.signing_key())
    forged = f"fg_{secrets.token_hex(16)}_{secrets.token_urlsafe(32)}"

    def scope(key: str | None) -> dict:
        headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
        if key:
            headers.append((b"authorization", f"Bearer {key}".encode()))
        return {"type": "http", "method": "POST", "path": "/posts", "query_string": b"",
                "headers": headers}

    scopes = {"baseline": scope(api_key), "cached": scope(api_key), "forged": scope(forged),
              "missing": scope(None), "miss": scope(api_key)}

    async def nothing(_request):
        return None

    async def check(request):
        try:
            await auth.user_key(request)
        except Unauthenticated:
            pass

    async def timed(case: str, n: int) -> float:
        sc, call = scopes[case], nothing if case == "baseline" else check
        if case == "cached":
            await check(Request(sc))  # warm: the key is now remembered
        clear = auth._entries().clear
        start = time.perf_counter_ns()
        if case == "miss":
            for _ in range(n):
                clear()
                await call(Request(sc))
        else:
            for _ in range(n):
                await call(Request(sc))
        return (time.perf_counter_ns() - start) / n / 1000

    out: dict[str, list[float]] = {c: [] for c in MICRO_CASES}
    for case in MICRO_CASES:  # warm-up: imports, the pool's connection, the threadpool
        await timed(case, 50)
    for rep in range(reps):
        order = MICRO_CASES[rep % len(MICRO_CASES):] + MICRO_CASES[:rep % len(MICRO_CASES)]
        for case in order:
            out[case].append(await timed(case, n_miss if case == "miss" else n_fast))
    out.update(await _through_app(reps, n_fast // 4, api_key, forged))
    engine().dispose()
    return out


async def _through_app(reps: int, n: int, api_key: str, forged: str) -> dict:
    """µs per ASGI call of a FastAPI app holding the real dependency and the API's own
    401 handler: what wiring the key check into a route costs, FastAPI's share included."""
    from fastapi import FastAPI, Request

    from api import main
    from api.auth import CurrentUser, user_key
    from tasks.demo.errors import Unauthenticated

    app = FastAPI()
    app.add_exception_handler(Unauthenticated, main._unauthenticated)

    @app.post("/plain")
    async def plain() -> None:
        return None

    @app.post("/authed")
    async def authed(me: CurrentUser) -> None:
        return None

    @app.post("/inline")
    async def inline(request: Request) -> None:
        await user_key(request)

    @app.post("/raise")
    async def raises() -> None:
        raise Unauthenticated("this request needs an API key")

    def scope(path: str, key: str | None) -> dict:
        headers = [(b"host", b"127.0.0.1"), (b"content-length", b"0")]
        if key:
            headers.append((b"authorization", f"Bearer {key}".encode()))
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
                "query_string": b"", "root_path": "", "headers": headers,
                "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}

    scopes = {"plain_200": scope("/plain", api_key), "authed_200_cached": scope("/authed", api_key),
              "inline_200_cached": scope("/inline", api_key),
              "raise_401": scope("/raise", api_key),
              "authed_401_forged": scope("/authed", forged),
              "authed_401_missing": scope("/authed", None)}
    statuses: dict[str, int] = {}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def timed(case: str, count: int) -> float:
        sc = scopes[case]

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses[case] = message["status"]

        start = time.perf_counter_ns()
        for _ in range(count):
            await app(dict(sc), receive, send)
        return (time.perf_counter_ns() - start) / count / 1000

    out: dict[str, list[float]] = {c: [] for c in APP_CASES}
    for case in APP_CASES:
        await timed(case, 50)
    for rep in range(reps):
        order = APP_CASES[rep % len(APP_CASES):] + APP_CASES[:rep % len(APP_CASES)]
        for case in order:
            out[case].append(await timed(case, n))
    out["statuses"] = statuses
    return out


if __name__ == "__main__":
    reps, n_fast, n_miss = json.loads(sys.argv[1])
    Path(sys.argv[2]).write_text(json.dumps(asyncio.run(measure(reps, n_fast, n_miss))))
