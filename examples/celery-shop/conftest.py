"""The example's test runs the shop (``tasks.py``, ``celeryconfig.py``) on a real broker.

FLOODGATE_TEST_BROKER=redis|amqp picks the broker. The example owns Redis database 9
(broker on Redis, results, the drain meter) and the RabbitMQ vhost
``{prefix}_example``, and touches nothing else. Only the installed celery-floodgate
is used: nothing is imported from the repository around this directory.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

HERE = Path(__file__).parent
REDIS = os.environ.get("FLOODGATE_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("FLOODGATE_TEST_PREFIX", "floodgate")
REDIS_DB = 9
VHOST = f"{PREFIX}_example"
#: The test's own emails limit: small, so filling the queue is quick.
EMAILS_LIMIT = 5


def broker_kind():
    kind = os.environ.get("FLOODGATE_TEST_BROKER", "redis")
    if kind not in ("redis", "amqp"):
        raise SystemExit(f"FLOODGATE_TEST_BROKER must be 'redis' or 'amqp', not {kind!r}")
    return kind


def shop_env():
    """The environment the shop reads (celeryconfig.py, tasks.py), in the example's namespace."""
    own_redis = f"{REDIS}/{REDIS_DB}"
    broker = own_redis if broker_kind() == "redis" else (
        f"amqp://guest:guest@127.0.0.1:5672/{VHOST}")
    return {**os.environ, "SHOP_BROKER_URL": broker, "SHOP_RESULT_BACKEND": own_redis,
            "SHOP_METER_URL": own_redis, "SHOP_EMAILS_LIMIT": str(EMAILS_LIMIT),
            "PYTHONPATH": str(HERE)}


def reset_namespace():
    """Empty the example's own namespace: its Redis database, and its vhost made anew."""
    redis.Redis.from_url(f"{REDIS}/{REDIS_DB}").flushdb()
    if broker_kind() == "amqp":
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", VHOST], capture_output=True)
        for command in (["add_vhost", VHOST],
                        ["set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"]):
            subprocess.run(["rabbitmqctl", "-q", *command], check=True, capture_output=True)


@pytest.fixture
def shop(monkeypatch):
    """The shop's ``tasks`` module, imported fresh on an empty namespace."""
    reset_namespace()
    for name, value in shop_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(HERE))
    for name in ("tasks", "celeryconfig"):
        sys.modules.pop(name, None)
    import tasks

    if Path(tasks.__file__).parent != HERE:
        raise RuntimeError(f"imported {tasks.__file__}, not the example's tasks.py; "
                           "run pytest from examples/celery-shop")
    yield tasks
    tasks.app.close()
    for name in ("tasks", "celeryconfig"):
        sys.modules.pop(name, None)


@pytest.fixture
def start_worker():
    """Start the shop's worker (``celery -A tasks worker``); killed by its PID at the end."""
    started = []

    def start():
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "emails,celery",
             "-P", "threads", "-c", "2", "--without-mingle", "--without-gossip",
             "-l", "warning"],
            cwd=HERE, env=shop_env())
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
def produce():
    """Run ``produce.py`` with arguments; returns the finished process (output captured)."""
    def run(*args):
        return subprocess.run([sys.executable, "produce.py", *args], cwd=HERE, env=shop_env(),
                              capture_output=True, text=True, timeout=300)

    return run
