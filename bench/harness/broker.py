"""Raw broker access for the benchmarks: queue depth, purge and reset.

Only Redis db 10 and the ``floodgate_bench`` vhost are ever touched.
"""
from __future__ import annotations

import amqp
import redis

from bench.harness.env import REDIS_URL, VHOST
from config.queues import NAMES

#: kombu's Redis priority sub-lists: queue, queue\x06\x163, \x06\x166, \x06\x169.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
#: Every queue a bench run may declare; reset deletes exactly these.
BENCH_QUEUES = (*NAMES, "bench_plain")


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def redis_keys(queue: str) -> list[str]:
    return [queue + suffix for suffix in _PRIORITY_SUFFIXES]


class Depth:
    """Ready messages in one queue, read the cheapest way each broker allows."""

    def __init__(self, broker: str, queue: str) -> None:
        self.broker, self.queue = broker, queue
        self._redis = redis_client() if broker == "redis" else None
        self._amqp: amqp.Connection | None = None
        self._chan = None

    def __call__(self) -> int:
        if self._redis is not None:
            with self._redis.pipeline(transaction=False) as pipe:
                for key in redis_keys(self.queue):
                    pipe.llen(key)
                return sum(pipe.execute())
        return self._channel().queue_declare(self.queue, passive=True).message_count

    def _channel(self):
        if self._chan is None:
            self._amqp = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest",
                                         virtual_host=VHOST)
            self._amqp.connect()
            self._chan = self._amqp.channel()
        return self._chan

    def close(self) -> None:
        if self._amqp is not None:
            self._amqp.close()
            self._amqp = self._chan = None


def purge(broker: str, queue: str) -> None:
    if broker == "redis":
        redis_client().delete(*redis_keys(queue))
        return
    with _amqp_channel() as channel:
        try:
            channel.queue_purge(queue)
        except amqp.exceptions.NotFound:
            pass


def reset(broker: str) -> None:
    """Empty db 10 except the run lock, and delete the bench queues in the bench vhost
    (their arguments may change between phases)."""
    client = redis_client()
    keys = [k for k in client.scan_iter(count=1000) if k != b"bench:lock"]
    for i in range(0, len(keys), 500):
        client.delete(*keys[i:i + 500])
    if broker != "amqp":
        return
    for queue in BENCH_QUEUES:
        with _amqp_channel() as channel:
            try:
                channel.queue_delete(queue)
            except amqp.exceptions.NotFound:
                pass


class _amqp_channel:
    def __enter__(self):
        self.conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest",
                                    virtual_host=VHOST)
        self.conn.connect()
        return self.conn.channel()

    def __exit__(self, *exc):
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - a channel closed by an error closes the connection
            pass
