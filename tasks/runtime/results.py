"""Celery's Redis result backend, with chords that can be applied again.

A frozen chord keeps its group id, so applying it a second time is a second run
of the same group. Celery 5.7's Redis backend marks a finished chord ``done``
(``celery-taskset-meta-<group>.c``, kept 300 s) so that a late copy of a header
task cannot run the body again, and forgets that mark for a new run in
``set_chord_size()``. But Celery calls ``set_chord_size()`` only just before it
publishes the *last* header task: the earlier header tasks are on the broker by
then, and a fast worker runs one first, meets the old ``done`` mark, and drops
its result; the chord never completes and its body never runs again.

Floodgate's parts made that window wide (a publisher confirm per message,
~10 ms on RabbitMQ, while the broker already hands the message to the worker;
an inline pool that runs it at once): measured on RabbitMQ, the body of a chord
applied a second time did not run 9 times in 20, against 3-5 in 20 for plain
Celery with its solo or threads pool (tests/integration/test_celery_semantics.py).

The fix: forget the previous run's mark in ``apply_chord()``, which Celery calls
once per application of a chord *before* any header task is published. A late
copy of a header task from a finished run is still dropped while no new run of
that group was applied (the mark stays), as Celery intends. Cost: one ``DEL``
per chord application, none per task.
"""
from __future__ import annotations

from celery.app.backends import by_url
from celery.backends.redis import RedisBackend


class RerunnableChords:
    """Mixed into the app's Redis result backend class by :func:`rerunnable_chords`."""

    def __init__(self, *args, url=None, **kwargs):
        # Set as the app's backend_cls (a class, not a URL), Celery passes no URL:
        # take the configured one, as Celery would have.
        app = kwargs.get("app")
        if url is None and app is not None:
            url = by_url(app.conf.result_backend, app.loader)[1]
        super().__init__(*args, url=url, **kwargs)

    def apply_chord(self, header_result_args, body, **kwargs):
        group_id = header_result_args[0]
        self.ensure(self.client.delete, (self.get_key_for_group(group_id, ".c"),))
        return super().apply_chord(header_result_args, body, **kwargs)


_mixed: dict[type, type] = {}


def rerunnable_class(backend_cls: type) -> type:
    if issubclass(backend_cls, RerunnableChords):
        return backend_cls
    if backend_cls not in _mixed:
        _mixed[backend_cls] = type(f"Rerunnable{backend_cls.__name__}",
                                   (RerunnableChords, backend_cls), {})
    return _mixed[backend_cls]


def rerunnable_chords(app) -> None:
    """Give ``app`` the backend above if its results are in Redis; idempotent, cheap.

    Celery keeps a Redis backend per thread (it is not thread-safe), so the class
    is set for every backend the app creates from now on, and the current thread's
    one, if it exists already, is converted in place (it only gains methods).
    """
    if getattr(app, "_fg_rerunnable_chords", False):
        return
    app._fg_rerunnable_chords = True
    if app.backend_cls is not None or not app.conf.result_backend:
        return  # a backend chosen in code, or none: leave it
    backend_cls, _ = by_url(app.conf.result_backend, app.loader)
    if not (isinstance(backend_cls, type) and issubclass(backend_cls, RedisBackend)):
        return
    app.backend_cls = rerunnable_class(backend_cls)
    current = app._backend
    if isinstance(current, RedisBackend):
        current.__class__ = rerunnable_class(type(current))
