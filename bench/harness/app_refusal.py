"""The real app's refused POST /posts, in process: µs per ASGI call (bench (auth)).

    python bench/harness/app_refusal.py '[REPS, N, PROFILE_PATH_OR_NULL]' OUT.json

Run by path, with PYTHONPATH naming the code to measure (the work tree, or an earlier
commit's export), so every import comes from that code; nothing here imports ``bench``.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

# Run by path, this file's folder leads sys.path, and its tasks.py would shadow the app's
# ``tasks`` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]


async def _app_refusal(reps: int, n: int, profile_path: str | None) -> dict:
    """Runs in the child, on whichever code PYTHONPATH names: µs per ASGI call of the real
    app (api.main.app: its middleware, routes, dependencies, handlers) for a refused
    POST /posts. The guard's in-process memory of the broker's refusal is replaced by
    raising the same QueueFull (the library is the same for both codes); no server, no
    socket. Code with keys also answers a post without a key (401)."""
    import gc

    from celery_floodgate import QueueFull

    from api import main
    from api.routes import posts

    full = QueueFull("fanout", 60, 60, 1)

    def refuse(*_args) -> None:
        raise full

    posts.refuse_if_remembered = refuse
    has_keys = (Path(main.__file__).parent / "auth.py").exists()
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    if has_keys:
        from api.auth import signing_key
        from tasks.demo import keys
        from tasks.demo.db import engine
        from tasks.demo.timeline import create_user

        with engine().begin() as conn:
            _, api_key = keys.create_key(conn, create_user(conn, f"app{os.getpid()}"),
                                         signing_key())
        body = json.dumps({"text": "refused"}).encode()
        cases = {"refused": [*headers, (b"authorization", f"Bearer {api_key}".encode())],
                 "no_key": headers}
    else:
        from api import authors

        authors.peek = lambda *_args: 1  # a known author, as after its first post
        body = json.dumps({"author": "someone", "text": "refused"}).encode()
        cases = {"refused": headers}
    gc.collect()
    gc.freeze()  # as the API's lifespan does

    def scope(hdrs: list) -> dict:
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": "POST", "scheme": "http", "path": "/posts", "raw_path": b"/posts",
                "query_string": b"", "root_path": "",
                "headers": [*hdrs, (b"content-length", str(len(body)).encode())],
                "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}

    statuses: dict[str, int] = {}

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def calls(case: str, count: int) -> float:
        sc = scope(cases[case])

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses[case] = message["status"]

        start = time.perf_counter_ns()
        for _ in range(count):
            await main.app(dict(sc), receive, send)
        return (time.perf_counter_ns() - start) / count / 1000

    out: dict = {c: [] for c in cases}
    for case in cases:
        await calls(case, 200)
    for i in range(reps):
        for case in (list(cases) if i % 2 == 0 else list(cases)[::-1]):
            out[case].append(await calls(case, n))
    if profile_path:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        await calls("refused", n)
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(30)
        Path(profile_path).write_text(text.getvalue())
    out["statuses"] = statuses
    return out


if __name__ == "__main__":
    reps, n, profile = json.loads(sys.argv[1])
    Path(sys.argv[2]).write_text(json.dumps(asyncio.run(_app_refusal(reps, n, profile))))
