"""The base class of every Floodgate task: redelivery after a dead worker is bounded.

With late acks, a message whose worker died is delivered again; a message
that kills its worker every time (a poison message) would loop forever.
Redis (kombu's restore) and RabbitMQ both flag such a message as
``redelivered``, so only those pay for one counter increment here. The count
lives in the app's back-pressure meter (``install(..., meter_url=)``); the bound
is the app's ``floodgate_max_redeliveries`` setting (default 3).
"""
from __future__ import annotations

import redis
from celery import Task

from tasks.backpressure import BackpressureError, guard_for

COUNTER_TTL_S = 24 * 3600
DEFAULT_MAX_REDELIVERIES = 3


class TooManyDeliveries(BackpressureError):
    """A message kept coming back after its worker died: treated as poison and failed."""

    def __init__(self, task_name: str, deliveries: int) -> None:
        self.task_name, self.deliveries = task_name, deliveries
        super().__init__(task_name, deliveries)
        self.message = (
            f"{task_name} was delivered {deliveries} times and its worker died each time; "
            "failing it instead of looping (raise MAX_REDELIVERIES to allow more)"
        )


class FloodgateTask(Task):
    # before_start, not __call__: Celery's tracer calls run() directly unless __call__
    # is overridden, and the override would cost every task a request push (bench (e)).
    # What before_start raises fails the task like run() raising.
    def before_start(self, task_id, args, kwargs):
        info = self.request.delivery_info or {}
        if info.get("redelivered") and not self.request.is_eager:
            deliveries = self._count_redelivery()
            bound = self.app.conf.get("floodgate_max_redeliveries", DEFAULT_MAX_REDELIVERIES)
            if deliveries > bound:
                raise TooManyDeliveries(self.name, deliveries + 1)

    def _count_redelivery(self) -> int:
        guard = guard_for(self.app)
        client = guard.meter.client if guard else None
        if client is None:
            return 0
        key = guard.meter.keys.redeliveries(self.request.id)
        try:
            with client.pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, COUNTER_TTL_S)
                return int(pipe.execute()[0])
        except redis.RedisError:
            return 0  # never block work because the counter is unreachable
