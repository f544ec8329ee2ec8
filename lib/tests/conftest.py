"""The library's own suite: a plain Celery project (``project/tasks.py`` and
``project/config.py``, names that shadow nothing of the library's) on a real broker.

FLOODGATE_TEST_BROKER=redis|amqp picks the broker. The suite owns Redis database 8 and
the RabbitMQ vhost ``{prefix}_lib`` and touches nothing else. FLOODGATE_LIB_INSTALLED=1
(set by the nox sessions) makes ``test_installed`` check that the package under test is
the installed wheel, not a checkout.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

PROJECT = Path(__file__).parent / "project"
REDIS = os.environ.get("FLOODGATE_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("FLOODGATE_TEST_PREFIX", "floodgate")
REDIS_DB = 8
VHOST = f"{PREFIX}_lib"
AMQP = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"


def broker_kind() -> str:
    kind = os.environ.get("FLOODGATE_TEST_BROKER", "redis")
    if kind not in ("redis", "amqp"):
        raise SystemExit(f"FLOODGATE_TEST_BROKER must be 'redis' or 'amqp', not {kind!r}")
    return kind


def broker_url() -> str:
    return f"{REDIS}/{REDIS_DB}" if broker_kind() == "redis" else AMQP


def meter_url() -> str:
    return f"{REDIS}/{REDIS_DB}"


def reset_broker() -> None:
    """Empty the suite's own namespace: its Redis database, and its vhost made anew."""
    redis.Redis.from_url(meter_url()).flushdb()
    if broker_kind() == "amqp":
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", VHOST], capture_output=True)
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", VHOST], check=True,
                       capture_output=True)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", VHOST, "guest",
                        ".*", ".*", ".*"], check=True, capture_output=True)


def project_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "LIB_TEST_BROKER_URL": broker_url(),
        "LIB_TEST_RESULT_BACKEND": f"{REDIS}/{REDIS_DB}",
        "LIB_TEST_METER_URL": meter_url(),
        "LIB_TEST_KEY_PREFIX": f"{PREFIX}-lib",
        "PYTHONPATH": str(PROJECT),
        **extra,
    }


@pytest.fixture
def project(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The plain project's ``tasks`` module, imported fresh on an empty broker namespace."""
    reset_broker()
    for name, value in project_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(PROJECT))
    for name in ("tasks", "config"):
        sys.modules.pop(name, None)
    import tasks  # the user's own tasks.py, not anything of the library's

    yield tasks
    tasks.app.close()
    for name in ("tasks", "config"):
        sys.modules.pop(name, None)


@pytest.fixture
def start_worker() -> Iterator[object]:
    """Start the plain project's worker as a real subprocess; killed by its PID at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(queues: str = "bounded,celery", concurrency: int = 2, module: str = "tasks",
              **env: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", module, "worker", "-P", "threads",
             "-c", str(concurrency), "-Q", queues, "--without-mingle", "--without-gossip",
             "-l", "warning"],
            cwd=PROJECT, env=project_env(**env))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=30)


def wait_for(check, timeout_s: float = 30.0, interval_s: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll ``check`` until it returns a true value; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"not true within {timeout_s} s: {check}")


def take_queued_ids(app, queue: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Take every message off ``queue`` (no worker needed) and return their task ids."""
    ids = []
    with app.connection_for_write() as conn:
        bound = app.amqp.queues[queue].bind(conn.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            ids.append(message.headers["id"])
    return ids
