"""Namespaces the tests own on the shared servers, and helpers to reset only those.

Redis databases 11-15 and the RabbitMQ vhosts named here are Floodgate's test
namespaces; nothing else on the shared servers is touched.
"""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import time

import psycopg
import redis
from amqp.exceptions import NotFound
from kombu import Connection

from config.queues import NAMES

# Two test runs at once (say, two developers' branches on one machine) each point
# FLOODGATE_TEST_REDIS at a Redis server of their own and set FLOODGATE_TEST_PREFIX,
# which prefixes every vhost and database name: nothing is then shared.
REDIS = os.environ.get("FLOODGATE_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("FLOODGATE_TEST_PREFIX", "floodgate")
AMQP = "amqp://guest:guest@127.0.0.1:5672"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"

# name -> (redis db for the broker, rabbitmq vhost)
NAMESPACES = {"faults": (11, f"{PREFIX}_faults"), "main": (12, f"{PREFIX}_test"),
              "guard": (14, f"{PREFIX}_guard"), "quorum": (14, f"{PREFIX}_quorum"),
              "e2e": (15, f"{PREFIX}_e2e"), "shop": (7, f"{PREFIX}_shop"),
              "status": (6, f"{PREFIX}_status"),
              # fanout=20: a vhost of its own, since a queue keeps the x-max-length it was
              # first declared with (reset_namespace purges, it does not recreate)
              "fair": (13, f"{PREFIX}_fair")}
RESULTS_DB = 13


def broker_kind() -> str:
    kind = os.environ.get("FLOODGATE_TEST_BROKER", "redis")
    if kind not in ("redis", "amqp", "sqs"):
        raise SystemExit(f"FLOODGATE_TEST_BROKER must be 'redis', 'amqp' or 'sqs', not {kind!r}")
    return kind


def broker_url(namespace: str) -> str:
    db, vhost = NAMESPACES[namespace]
    if broker_kind() == "sqs":
        return f"sqs://testing:testing@127.0.0.1:{sqs_server(namespace)}"
    return f"{REDIS}/{db}" if broker_kind() == "redis" else f"{AMQP}/{vhost}"


# SQS: a local SQS-compatible server (moto's server mode) per namespace, started on a
# free loopback port the first time the namespace is used, stopped by stop_sqs_servers()
# (the integration conftest's session fixture) or at exit: separate servers keep
# namespaces apart as Redis databases and RabbitMQ vhosts do.
_sqs_servers: dict[str, tuple[subprocess.Popen, int]] = {}
SQS_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
                   "region_name": "us-east-1"}


def sqs_server(namespace: str) -> int:
    """The port of this namespace's moto server, started if it is not running."""
    if namespace in _sqs_servers:
        return _sqs_servers[namespace][1]
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or "moto_server"
    port = free_port()
    # Tests purge queues more often than SQS's one PurgeQueue a minute.
    env = {**os.environ, "MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false"}
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _sqs_servers[namespace] = (proc, port)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_sqs_servers()
                raise RuntimeError(f"moto_server did not start on port {port} (pip install "
                                   "'.[sqs]' installs it)") from None
            time.sleep(0.05)


def stop_sqs_servers() -> None:
    for proc, _ in _sqs_servers.values():
        proc.terminate()
    for proc, _ in _sqs_servers.values():
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    _sqs_servers.clear()


atexit.register(stop_sqs_servers)


def sqs_client(namespace: str):
    import boto3

    return boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{sqs_server(namespace)}",
                        **SQS_CREDENTIALS)


def _reset_sqs(namespace: str) -> None:
    """Purge the namespace's queues (kept: connections cache their URLs) and its
    admission counts in the meter (the results database)."""
    client = sqs_client(namespace)
    for url in client.list_queues().get("QueueUrls", []):
        client.purge_queue(QueueUrl=url)
    meter = redis.Redis.from_url(results_url())
    endpoint = f"http://127.0.0.1:{sqs_server(namespace)}/"
    for key in meter.scan_iter(match=f"*:sqs:admitted:{endpoint}*"):
        meter.delete(key)


def results_url() -> str:
    return f"{REDIS}/{RESULTS_DB}"


_fresh: set[str] = set()


def reset_namespace(namespace: str) -> None:
    """Empty a namespace. The first time in a session the RabbitMQ vhost is recreated;
    after that its queues are only purged: kombu pools connections globally by URL and
    remembers what they declared, so a recreated vhost or a deleted queue would leave
    pooled connections dead or publishing into nothing."""
    db, vhost = NAMESPACES[namespace]
    redis.Redis.from_url(f"{REDIS}/{db}").flushdb()
    if broker_kind() == "sqs":
        _reset_sqs(namespace)
        return
    if broker_kind() != "amqp":
        return
    if namespace in _fresh:
        with Connection(broker_url(namespace), transport="kombu.transport.pyamqp:Transport") as conn:
            for queue in NAMES:
                channel = conn.channel()
                try:
                    channel.queue_purge(queue)
                    channel.close()
                except NotFound:
                    pass  # never declared in this namespace yet
        return
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest",
                    ".*", ".*", ".*"], check=True, capture_output=True)
    _fresh.add(namespace)


def reset_results() -> None:
    redis.Redis.from_url(results_url()).flushdb()


def database_url(name: str, tmp_dir: str) -> str:
    """A fresh database of our own, migrated to the newest schema: PostgreSQL if
    TEST_DATABASE says so, else SQLite."""
    name = name.replace("floodgate", PREFIX, 1)
    if os.environ.get("TEST_DATABASE") == "postgresql":
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{PG}/{name}"
    else:
        url = f"sqlite:///{tmp_dir}/{name}.db"
    migrate(url)
    return url


def migrate(url: str) -> None:
    """The schema as ``python -m config.migrate`` makes it, in this process (tens of ms).
    Imports neither the Celery app nor its configuration (tests/faults/harness.py)."""
    from config.migrate import upgrade

    upgrade(url)


def api_env() -> dict[str, str]:
    """What the API needs in every test environment: API_KEY_SECRET and OPS_TOKEN, random
    per session (the API refuses to start without them; tests read them back from
    os.environ or a part's env), and a signup rate no suite reaches, since all tests sign
    up and follows from one address (the rate-limit tests set their own).

    Fair admission off (FAIR_ADMISSION=false): the suites written for first-come admission
    fill a queue to its exact limit with untagged work, which fairness refuses at the
    default class's 90 %; the fairness suites (tests/integration/test_api_fairness.py,
    test_fair_amqp.py, lib/tests/test_fair_admission.py) turn it on themselves."""
    import secrets

    for name in ("API_KEY_SECRET", "OPS_TOKEN"):
        _session_secrets.setdefault(name, secrets.token_urlsafe(32))
    return {**_session_secrets, "RATE_LIMIT_SIGNUPS": "100000/minute",
            "RATE_LIMIT_FOLLOWS_PER_ADDRESS": "1000000/minute", "FAIR_ADMISSION": "false"}


_session_secrets: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_env(namespace: str, db_name: str, tmp_dir, **settings) -> dict[str, str]:
    """The environment of Floodgate's parts run as subprocesses on ``namespace``, with a
    fresh database of their own; ``settings`` are more variables (FANOUT_CHUNK_SIZE=2)."""
    from pathlib import Path

    return {**os.environ, "BROKER_URL": broker_url(namespace), "RESULT_BACKEND": results_url(),
            "DATABASE_URL": database_url(db_name, str(tmp_dir)),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            **{name: str(value) for name, value in settings.items()}}
