"""``python -m api.serve``: the API in uvicorn, with the limits that keep cheap requests cheap.

* ``limit_concurrency`` (API_LIMIT_CONCURRENCY): past that many open connections or
  running requests, a process answers 503 at once instead of taking on more.
* A request must arrive whole within REQUEST_READ_TIMEOUT_S of its first byte, and its
  head within :data:`MAX_HEAD_BYTES` (api/http_protocol.py): slow-header and slow-body
  clients are cut off, where plain uvicorn would wait for them for ever.
* A connection with no request in flight closes after :data:`KEEP_ALIVE_S`.
* No access log unless ``--access-log``: under overload it writes a line per refusal,
  thousands a second, costing more than the refusals (the API logs every accepted job).
"""
from __future__ import annotations

import argparse
import functools
import os

import uvicorn

from api.http_protocol import DeadlineHttpToolsProtocol
from config.settings import Settings, get_settings

APP = "api.main:app"
KEEP_ALIVE_S = 5
#: A request's line and headers; an API key is under 100 bytes (nginx allows 8 KiB a line).
MAX_HEAD_BYTES = 16_384


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m api.serve",
                                     description="Serve Floodgate's HTTP API.")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, help="default: API_PORT (8000)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    parser.add_argument("--access-log", action="store_true", help="log a line per request")
    return parser.parse_args(argv)


def uvicorn_options(settings: Settings, args: argparse.Namespace) -> dict:
    # A partial, not a subclass made here: with --workers, uvicorn pickles the options
    # into each worker process, and a partial of a module's class pickles by name.
    protocol = functools.partial(DeadlineHttpToolsProtocol,
                                 read_timeout_s=settings.request_read_timeout_s,
                                 max_head_bytes=MAX_HEAD_BYTES,
                                 max_per_client=settings.api_max_connections_per_client)
    return {"host": args.host, "port": args.port or settings.api_port, "workers": args.workers,
            "access_log": args.access_log, "http": protocol, "ws": "none",
            "limit_concurrency": settings.api_limit_concurrency,
            "timeout_keep_alive": KEEP_ALIVE_S, **proxy_options()}


def proxy_options() -> dict:
    """X-Forwarded-For only from the proxies FORWARDED_ALLOW_IPS names, none by default.

    Uvicorn trusts 127.0.0.1 unless told otherwise, so any local process could choose
    the address the signup limit counts (api/ratelimit.py) by sending the header.
    """
    trusted = os.environ.get("FORWARDED_ALLOW_IPS", "").strip()
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)  # --help needs no settings
    settings = get_settings()
    settings.require_api_secrets()  # here, once: not in each worker that uvicorn restarts
    uvicorn.run(APP, **uvicorn_options(settings, args))


if __name__ == "__main__":
    main()
