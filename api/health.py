"""Dependency checks for /healthz, each bounded to about a second."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from amqp import Message
from sqlalchemy import text

from config import app
from tasks.demo.db import engine

TIMEOUT_S = 1.0
_pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="healthz")


def _broker() -> None:
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=TIMEOUT_S)
        if conn.transport.driver_type == "amqp":
            _confirmed_ping(conn)


def _confirmed_ping(conn) -> None:
    """A blocked RabbitMQ (memory or disk alarm) still accepts connections; only a
    confirmed publish shows it takes messages. The unroutable ping is discarded."""
    channel = conn.channel()
    try:
        channel.basic_publish_confirm(Message(b"", delivery_mode=1), exchange="",
                                      routing_key="floodgate.healthz", confirm_timeout=TIMEOUT_S)
    except Exception:
        conn.connection.collect()
        raise
    channel.close()


def _result_backend() -> None:
    backend = app.backend
    client = getattr(backend, "client", None)
    if client is not None and hasattr(client, "ping"):
        client.ping()


def _database() -> None:
    with engine().connect() as conn:
        conn.execute(text("SELECT 1"))


CHECKS = {"broker": _broker, "result_backend": _result_backend, "database": _database}


def checks() -> dict[str, str]:
    futures = {name: _pool.submit(fn) for name, fn in CHECKS.items()}
    results = {}
    for name, future in futures.items():
        try:
            future.result(timeout=TIMEOUT_S * 2)
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means down
            results[name] = f"down: {type(exc).__name__}"
    return results
