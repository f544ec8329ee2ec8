"""Celery's Redis result backend, with chords that can be applied again.

A frozen chord keeps its group id, so applying it a second time is a second run
of the same group. Celery 5.7's Redis backend marks a finished chord ``done``
(``celery-taskset-meta-<group>.c``, kept 300 s) so that a late copy of a header
task cannot run the body again, and forgets that mark for a new run in
``set_chord_size()``. But Celery calls ``set_chord_size()`` only just before it
publishes the *last* header task: the earlier header tasks are on the broker by
then, and a fast worker runs one first, meets the old ``done`` mark, and drops
its result; the chord never completes and its body never runs again.

Publisher confirms widen that window (a confirm per message, while the broker
already hands the message to a worker): on RabbitMQ with a Redis result backend
the body of a chord applied a second time did not run 8 times in 20 for plain
Celery with ``confirm_publish`` alone, 4 in 20 for an app with install().

The fix (`RerunnableChords`): forget the previous run's mark in
``apply_chord()``, which Celery calls once per application of a chord, *before*
any header task is published.

Why it is safe: it deletes the same key Celery's own ``set_chord_size()`` deletes
for every application of a chord, only earlier in that same application; Celery
deletes it again where it always did. A late copy of a header task from a
finished run is still dropped while no new run of that group was applied (the
mark stays), as Celery intends; once a new run is applied, Celery itself lets
such a copy in (after ``set_chord_size()``), and the fix widens that by the time
the header takes to publish. Nothing else changes: no key, no task, no message.
It deletes the mark only when it says ``done``: in 5.7 the same key first holds the
claim of the worker that publishes the body, whose cleanup checks it, so a chord
applied again while that worker is still cleaning up waits for it (at most
CLAIM_WAIT_S); deleting a live claim let the old run's state survive and the new
run's body fire twice. Cost: one Redis round trip (a short script) per chord
application, none per task. Turn it off with
``install(..., rerunnable_chords=False)``.
"""
from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from celery.app.backends import by_url
from celery.backends.redis import RedisBackend

APPLIED = "_floodgate_rerunnable_chords"


#: Forget the mark only if it says ``done``: any other value is a worker's claim on the
#: previous run's body, whose cleanup checks it (deleting it would leave that run's
#: state behind, and the new run's first header would fire the body early).
FORGET_DONE_LUA = """
local mark = redis.call('GET', KEYS[1])
if mark == 'done' then
    redis.call('DEL', KEYS[1])
    return 1
end
if mark then
    return 2
end
return 0
"""
CLAIMED = 2
#: How long a chord applied again waits for the previous run's claim to finish (the
#: worker publishing its body and cleaning up), polling every CLAIM_POLL_S.
CLAIM_WAIT_S = 2.0
CLAIM_POLL_S = 0.01


class RerunnableChords:
    """Mixed into a Redis result backend class: a chord's ``done`` mark is forgotten
    when the chord is applied, before any header task is published."""

    client: Any

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> Any:
        """Forget the previous run's ``done`` mark, then apply as Celery does."""
        self._forget_done(header_result_args[0])
        return super().apply_chord(header_result_args, body, **kwargs)  # type: ignore[misc]

    def _forget_done(self, group_id: str) -> None:
        """Delete the group's ``done`` mark; while a worker still holds its claim on the
        previous run, wait (at most CLAIM_WAIT_S) for that run's cleanup to mark it done."""
        backend: Any = self
        key = backend.get_key_for_group(group_id, ".c")
        deadline = time.monotonic() + CLAIM_WAIT_S
        while backend.ensure(self.client.eval, (FORGET_DONE_LUA, 1, key)) == CLAIMED:
            if time.monotonic() >= deadline:
                return  # Celery's set_chord_size() deletes it later, as without the fix
            time.sleep(CLAIM_POLL_S)


_mixed: dict[type, type] = {}
_mixed_lock = threading.Lock()


def rerunnable_class(backend_cls: type) -> type:
    """``backend_cls`` with `RerunnableChords` mixed in (one class per base)."""
    if issubclass(backend_cls, RerunnableChords):
        return backend_cls
    with _mixed_lock:
        if backend_cls not in _mixed:
            _mixed[backend_cls] = type(f"Rerunnable{backend_cls.__name__}",
                                       (RerunnableChords, backend_cls), {})
        return _mixed[backend_cls]


def is_redis_backend(backend_cls: object) -> bool:
    """Whether ``backend_cls`` is Celery's Redis result backend (or Sentinel, a subclass)."""
    return isinstance(backend_cls, type) and issubclass(backend_cls, RedisBackend)


def rerunnable_chords(app: Any) -> None:
    """Give ``app`` `RerunnableChords` whenever its result backend is Redis.

    Idempotent and cheap. Celery creates the backend lazily (``app.backend``, one
    per thread for Redis, which is not thread-safe) from ``backend_cls`` or
    ``result_backend`` as they are *then*; so the app's backend factory is wrapped,
    and a ``result_backend`` set after this call is honoured. The calling thread's
    backend, if it exists already, is converted in place (it only gains a method);
    another thread's existing one cannot be reached: call this (install()) before
    the app is used.
    """
    if getattr(app, APPLIED, False):
        return
    setattr(app, APPLIED, True)
    app._get_backend = _backend_factory(weakref.ref(app))
    current = app._backend
    if isinstance(current, RedisBackend):
        current.__class__ = rerunnable_class(type(current))


def _backend_factory(app_ref: "weakref.ref[Any]") -> Any:
    """Celery's ``Celery._get_backend``, with the Redis backend class mixed; holds the app
    weakly, so the app, which holds this, is freed as before."""
    def get_backend() -> Any:
        app = app_ref()
        if app is None:
            raise RuntimeError("the Celery app of this result backend was garbage-collected")
        backend_cls, url = by_url(app.backend_cls or app.conf.result_backend, app.loader)
        if is_redis_backend(backend_cls):
            backend_cls = rerunnable_class(backend_cls)
        return backend_cls(app=app, url=url)

    return get_backend
