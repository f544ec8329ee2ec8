"""Plain Celery for comparison: default kombu transport, no queue limit.

Same serializer settings as Floodgate; on RabbitMQ publisher confirms and a
durable queue, so delivery safety equals Floodgate's. Workers run it with
``celery -A bench.harness.plain_app worker -Q bench_plain``.
"""
from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

from bench.harness.task_bodies import register

QUEUE = "bench_plain"

def make_plain_app(broker_url: str, name: str = "plain") -> Celery:
    plain = Celery(name, set_as_current=False)
    plain.conf.update(
        broker_url=broker_url,
        task_serializer="json", result_serializer="json",
        accept_content=["json"], result_accept_content=["json"],
        task_queues=[Queue(QUEUE, Exchange(QUEUE, type="direct", durable=True),
                           routing_key=QUEUE, durable=True)],
        task_default_queue=QUEUE, task_default_exchange=QUEUE, task_default_routing_key=QUEUE,
        broker_transport_options={"confirm_publish": True} if broker_url.startswith("amqp") else {},
        broker_connection_retry_on_startup=True,
    )
    register(plain)
    return plain


def same_config_minus_guard(broker_url: str) -> Celery:
    """Floodgate's whole configuration except the guard (install() is never called on it):
    kombu's own transport, no x-max-length."""
    plain = Celery("plain-config", set_as_current=False)
    plain.config_from_object("config.celeryconfig")
    plain.conf.update(
        task_queues=[Queue(QUEUE, Exchange(QUEUE, type="direct", durable=True),
                           routing_key=QUEUE, durable=True)],
    )
    register(plain)
    return plain


if os.environ.get("BROKER_URL"):  # the worker's app (celery -A bench.harness.plain_app)
    from bench.harness.conf_knobs import apply

    app = make_plain_app(os.environ["BROKER_URL"])
    apply(app)
