"""Two costs Celery pays on every publish that change nothing after the first.

Profiled on ``send_task`` (bench/RESULTS.md, finding 11), per message:

* kombu's ``maybe_declare`` copies the route's Queue and its Exchange (``bind``)
  before it looks the queue up in the connection's cache of declared entities,
  so the lookup almost always answers "already declared" after a copy of about
  forty attributes. We look the queue up first, the way kombu does, and pass
  ``declare=[]`` only when kombu would have skipped the declaration anyway.
* ``argsrepr``/``kwargsrepr`` (what Flower and the logs show) come from Celery's
  ``saferepr``, a streaming pretty-printer written for deep or huge values. For a
  flat tuple of numbers and plain ASCII strings, ``repr`` gives the same text
  (tests/unit/test_lean_publish.py checks that); anything else still goes to saferepr.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from functools import cached_property  # kombu's, as mypy reads it

    # The mixin's attributes and super() are those of Celery's AMQP helper.
    from celery.app.amqp import AMQP as _AMQPHelper
else:
    from kombu.utils.objects import cached_property

    _AMQPHelper = object

# Exact types: a subclass (IntEnum, a str Enum, a namedtuple, OrderedDict) has a repr
# of its own, which saferepr does not use.
_PLAIN = frozenset({int, float, bool, type(None)})


def _plain(value: Any) -> bool:
    if type(value) is str:
        return value.isascii() and value.isprintable() and "'" not in value and "\\" not in value
    return type(value) in _PLAIN


def plain_repr(value: Any, maxsize: int) -> str | None:
    """``repr(value)`` where it equals Celery's saferepr (flat, plain, short); else None."""
    if type(value) in (tuple, list):
        flat = all(_plain(v) for v in value)
    elif type(value) is dict:
        flat = all(type(k) is str and _plain(k) and _plain(v) for k, v in value.items())
    else:
        return None
    if not flat:
        return None
    text = repr(value)
    return text if len(text) <= maxsize else None


class LeanPublish(_AMQPHelper):  # type: ignore[misc]  # Celery is untyped
    """Mixed into the app's AMQP helper with GuardedAMQP."""

    def as_task_v2(self, task_id: str, name: str, args: Any = None, kwargs: Any = None,
                   *rest: Any, argsrepr: str | None = None, kwargsrepr: str | None = None,
                   **options: Any) -> Any:
        """Celery's task message, with ``repr`` for flat arguments (see the module docstring)."""
        if argsrepr is None:
            argsrepr = plain_repr(args or (), self.argsrepr_maxsize)
        if kwargsrepr is None:
            kwargsrepr = plain_repr(kwargs or {}, self.kwargsrepr_maxsize)
        return super().as_task_v2(task_id, name, args, kwargs, *rest, argsrepr=argsrepr,
                                  kwargsrepr=kwargsrepr, **options)

    @cached_property
    def send_task_message(self) -> Callable[..., Any]:
        """Celery's sender, skipping the declaration copy kombu would skip anyway."""
        send = self._create_task_sender()
        queues = self.queues

        def send_task_message(producer: Any, name: str, message: Any, queue: Any = None,
                              declare: Any = None, **options: Any) -> Any:
            route = queues.get(queue) if isinstance(queue, str) else queue
            if declare is None and _declared(producer, route):
                declare = []
            return send(producer, name, message, queue=queue, declare=declare, **options)

        return send_task_message


def _declared(producer: Any, queue: Any) -> bool:
    """Whether kombu's maybe_declare would skip this queue on the producer's connection."""
    if queue is None or not queue.can_cache_declaration:
        return False
    connection = producer.connection
    return connection is not None and hash(queue) in connection.declared_entities
