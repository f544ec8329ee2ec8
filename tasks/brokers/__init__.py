"""Guarded kombu transports: the one place every publish meets its queue's limit.

* Redis: :mod:`tasks.brokers.redis` counts the queue (with its priority
  sub-lists) and pushes in one Lua script, so the limit is exact under any
  number of concurrent submitters and costs no extra round trip.
* RabbitMQ: :mod:`tasks.brokers.amqp` relies on the broker's own
  ``x-max-length`` with ``x-overflow: reject-publish`` and publisher confirms;
  a nack becomes :class:`tasks.errors.QueueFull`.

:mod:`config.celery_app` registers them under kombu's ``redis`` and ``amqp`` names.
"""
