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
from celery.exceptions import Reject

from celery_floodgate import BackpressureError, Refused, guard_for

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
    def retry(self, *args, **kwargs):
        """Celery's retry, except that a retry the guard refuses fails the task visibly.

        A retry is a new publish, so it meets its queue's limit like any other. Celery
        turns any error of that publish into ``Reject(requeue=False)``: the message is
        dropped, and the task's result stays as it was (PENDING) for ever: lost work
        nobody is told about. Requeueing it instead would loop on a full queue, and
        waiting here would block the very worker that drains it. So the task fails
        with the refusal (``QueueFull`` carrying ``retry_after_s``): its state is
        FAILURE, its error callbacks and ``on_failure`` run, and the caller decides
        (tests/integration/test_celery_semantics.py).
        """
        try:
            return super().retry(*args, **kwargs)
        except Reject as rejected:
            if isinstance(rejected.reason, Refused):
                raise rejected.reason from None
            raise

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
