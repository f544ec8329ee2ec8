"""Floodgate's tasks, in two layers on the library, whose imports point one way:

- The back pressure itself is the library :mod:`celery_floodgate` (``lib/``), a dependency.
- :mod:`tasks.runtime`: Floodgate's worker runtime (pool, base task), uses the library.
- :mod:`tasks.demo`: the demo domain (posts, timelines, fan-out), uses both.

Importing this package imports none of them.
"""
