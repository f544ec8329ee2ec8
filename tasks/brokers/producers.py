"""Pooled producers that keep their connection when a message is refused.

kombu's ``Producer.__exit__`` replaces a pooled connection on *any* exception,
so each refusal would cost a reconnect and a re-declare (15 ms on Redis, 8.5 ms
on RabbitMQ, bench/RESULTS.md (a)) just when the system is busiest. A refusal
says nothing about the connection; every other error still replaces it.
"""
from __future__ import annotations

from celery.app.amqp import AMQP
from kombu import Producer, pools

from tasks.errors import Refused


class KeepsConnectionOnRefusal(Producer):
    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        if exc_type is not None and issubclass(exc_type, Refused):
            self.release()
            return
        super().__exit__(exc_type, exc_val, exc_tb)


class FloodgateAMQP(AMQP):
    """Celery's AMQP helper with the producer pool above (``Celery(amqp=...)``)."""

    @property
    def producer_pool(self):
        if self._producer_pool is None:
            connections = pools.connections[self.app.connection_for_write()]
            self._producer_pool = pools.ProducerPool(
                connections, limit=self.app.pool.limit, Producer=KeepsConnectionOnRefusal)
        return self._producer_pool

    publisher_pool = producer_pool
