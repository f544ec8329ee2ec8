"""Floodgate's tasks, in three layers whose imports point one way:

- :mod:`tasks.backpressure`: bounded queues for any Celery app (the library).
- :mod:`tasks.runtime`: Floodgate's worker runtime (pool, base task), uses the library.
- :mod:`tasks.demo`: the demo domain (posts, timelines, fan-out), uses both.

Importing this package imports none of them.
"""
