"""Namespaces the tests own on the shared servers, and helpers to reset only those.

Redis databases 11-15 and the RabbitMQ vhosts named here are Floodgate's test
namespaces; nothing else on the shared servers is touched.
"""
from __future__ import annotations

import os
import socket
import subprocess

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
              "e2e": (15, f"{PREFIX}_e2e"), "shop": (7, f"{PREFIX}_shop")}
RESULTS_DB = 13


def broker_kind() -> str:
    kind = os.environ.get("FLOODGATE_TEST_BROKER", "redis")
    if kind not in ("redis", "amqp"):
        raise SystemExit(f"FLOODGATE_TEST_BROKER must be 'redis' or 'amqp', not {kind!r}")
    return kind


def broker_url(namespace: str) -> str:
    db, vhost = NAMESPACES[namespace]
    return f"{REDIS}/{db}" if broker_kind() == "redis" else f"{AMQP}/{vhost}"


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
    """A fresh database of our own: PostgreSQL if TEST_DATABASE says so, else SQLite."""
    name = name.replace("floodgate", PREFIX, 1)
    if os.environ.get("TEST_DATABASE") == "postgresql":
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{PG}/{name}"
    return f"sqlite:///{tmp_dir}/{name}.db"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
