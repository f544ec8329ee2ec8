"""The one submission function every caller uses.

The limit itself is enforced below this, in the guarded transport, so that
``.delay()``, ``send_task``, canvas and beat are bounded too. This function
adds what callers need around it: a task id they choose, and broker failures
turned into :class:`BrokerUnavailable` instead of a raw kombu error.
"""
from __future__ import annotations

from celery.result import AsyncResult
from kombu.exceptions import KombuError, OperationalError

from config import app
from config.queues import DEFAULT, ROUTES
from celery_floodgate import BrokerUnavailable, QueueFull


def queue_of(task_name: str) -> str:
    return ROUTES.get(task_name, DEFAULT)


def submit(task_name: str, *, args: tuple = (), kwargs: dict | None = None,
           task_id: str | None = None) -> AsyncResult:
    """Publish ``task_name``; raises QueueFull or BrokerUnavailable, never half-sends."""
    queue = queue_of(task_name)
    try:
        return app.send_task(task_name, args=args, kwargs=kwargs or {}, task_id=task_id)
    except QueueFull:
        raise
    except (OperationalError, KombuError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(queue, _short(exc)) from exc


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]
