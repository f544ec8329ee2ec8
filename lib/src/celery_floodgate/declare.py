"""``passive_queues(app, names)``: use queues another process declared, never declare them.

On RabbitMQ install() declares each bounded queue with ``x-max-length`` and
``x-overflow: reject-publish``. A queue's arguments are fixed when it is created,
and RabbitMQ refuses a declaration with other arguments: a process of the same
app that does not call install() (a worker started from a script, another
service publishing to the queue) declares it without them, on its first publish
or when its worker starts, and the broker closes its channel with
``406 PRECONDITION_FAILED - inequivalent arg 'x-max-length'``.

Such a process calls install() with the same limits (best: it then publishes
through the guard), or, where it cannot, marks those queues ``no_declare``:
kombu then declares neither the queue nor its exchange nor the binding, on
publish (``Producer.publish`` → ``maybe_declare`` → ``Queue.declare``) and on
consume (the worker's ``TaskConsumer`` → ``Consumer.declare``); the queue must
exist already (the installed app declares it on its first publish or worker
start). Such a process is not guarded: on RabbitMQ a publish to a full queue
is dropped by the broker unless the app sets ``broker_transport_options
{"confirm_publish": True}`` (then it raises); on Redis nothing bounds it.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from kombu.entity import Exchange, Queue


def passive_queues(app: Any, names: Iterable[str]) -> list[Any]:
    """Make ``app`` publish to and consume from the queues ``names`` without declaring them.

    Each is set in ``app.conf.task_queues`` as the app declares it (its own
    ``Queue`` from ``task_queues``, else a durable queue on a direct exchange of the
    same name, as install() makes it), with ``no_declare=True``. Call it before the
    app publishes or its worker starts. Returns the app's queues as now configured.
    """
    queues = {q.name: q for q in app.conf.task_queues or ()}
    for name in names:
        queue: Any = copy.copy(queues[name]) if name in queues else Queue(
            name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)
        queue.no_declare = True
        queues[name] = queue
    app.conf.task_queues = list(queues.values())
    amqp = app.__dict__.get("amqp")
    if amqp is not None:  # re-read task_queues, whatever read them already
        for cached in ("queues", "default_queue", "router"):
            amqp.__dict__.pop(cached, None)
    return list(queues.values())
