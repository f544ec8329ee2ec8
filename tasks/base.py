"""The base class of every Floodgate task: redelivery after a dead worker is bounded.

With late acks, a message whose worker died is delivered again; a message
that kills its worker every time (a poison message) would loop forever.
Redis (kombu's restore) and RabbitMQ both flag such a message as
``redelivered``, so only those pay for one counter increment here.
"""
from __future__ import annotations

import redis
from celery import Task

from config.queues import KEY_PREFIX
from config.settings import get_settings
from tasks.errors import TooManyDeliveries
from tasks.meter import meter_client

COUNTER_TTL_S = 24 * 3600


class FloodgateTask(Task):
    # before_start, not __call__: Celery's tracer calls run() directly unless __call__
    # is overridden, and the override would cost every task a request push (bench (e)).
    # What before_start raises fails the task like run() raising.
    def before_start(self, task_id, args, kwargs):
        info = self.request.delivery_info or {}
        if info.get("redelivered") and not self.request.is_eager:
            deliveries = self._count_redelivery()
            if deliveries > get_settings().max_redeliveries:
                raise TooManyDeliveries(self.name, deliveries + 1)

    def _count_redelivery(self) -> int:
        client = meter_client()
        if client is None:
            return 0
        key = f"{KEY_PREFIX}:redeliveries:{self.request.id}"
        try:
            with client.pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, COUNTER_TTL_S)
                return int(pipe.execute()[0])
        except redis.RedisError:
            return 0  # never block work because the counter is unreachable
