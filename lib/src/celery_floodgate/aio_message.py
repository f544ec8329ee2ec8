"""Celery's task message, built as ``send_task`` builds it, for a publisher that is not kombu's.

`celery_floodgate.aio` publishes without a kombu producer, so the steps Celery and
kombu take between ``apply_async`` and the wire are followed here, in their order,
with Celery's own pieces wherever one exists:

1. ``Task.apply_async`` (a registered task or a task's signature): argument check,
   shadow name, the task's execution options, ``ignore_result``;
2. ``Celery.send_task``: the task's options as defaults, the app's router
   (``app.amqp.router``, so `install()`'s remembered refusal answers at once),
   ``expires`` -> ``expiration``, the parent task's ids, and the message itself from
   ``app.amqp.create_task_message`` (task protocol 2);
3. ``AMQP.send_task_message``: headers and properties merged, the queue, exchange,
   routing key and delivery mode resolved, the entities to declare, serializer and
   compression defaults, and ``before_task_publish``;
4. kombu's ``Producer.publish``: ``priority``, ``expiration`` in milliseconds, the
   body serialized and compressed (``kombu.serialization.dumps``, ``kombu.compression``).

What a caller asks for that this cannot follow without blocking (a task protocol 1
app, ``task_send_sent_event``, an eager app, a task class with its own
``apply_async``, a canvas, native delayed delivery on quorum queues) raises
`Fallback`: the caller then sends through ``send_task`` in a thread.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import signals
from celery.app.task import Task
from celery.canvas import Signature
from celery.utils.functional import maybe_list
from dateutil.parser import isoparse  # type: ignore[import-untyped]
from kombu import Exchange
from kombu.common import Broadcast
from kombu.compression import compress
from kombu.entity import maybe_delivery_mode
from kombu.serialization import dumps
from kombu.utils.uuid import uuid

log = logging.getLogger("celery.app.base")  # where Celery logs the same warnings
_OMITTED: Any = object()
#: ``send_task_message``'s own parameters; every other option becomes a message property.
_SENDER_PARAMETERS = ("exchange", "routing_key", "queue", "event_dispatcher", "retry",
                      "retry_policy", "serializer", "delivery_mode", "compression",
                      "declare", "headers", "exchange_type", "timeout", "confirm_timeout")

RouteCheck = Callable[[str, str, "str | None"], None]
# The caller's check of the route, for this call only (the steps in between are Celery's
# signatures, which have no room for it).
_route_check: ContextVar[RouteCheck | None] = ContextVar("floodgate_route_check", default=None)


class Fallback(Exception):
    """This call needs something the async path does not do: send it through Celery."""


@dataclass
class Outgoing:
    """One task message, serialized, with where it goes: what kombu's producer would
    hand to its channel (``prepare_message`` and ``basic_publish``)."""

    task_id: str
    name: str
    qname: str | None
    exchange: str
    routing_key: str
    body: bytes
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    #: kombu's ``properties``: correlation_id, reply_to, delivery_mode, expiration...
    properties: dict[str, Any]
    priority: int
    declare: list[Any]
    raw_body: Any            # the unserialized body, as the publish signals carry it
    result_cls: Any
    ignore_result: Any
    add_to_parent: bool
    extra: dict[str, Any] = field(default_factory=dict)


def prepare(app: Any, target: Any, args: Sequence[Any] | None,
            kwargs: Mapping[str, Any] | None, options: dict[str, Any],
            route_check: RouteCheck | None = None) -> Outgoing:
    """The message ``target`` (a task name, a registered task or a task's signature)
    would be sent as by ``apply_async``/``send_task``; ``before_task_publish`` is sent.

    ``route_check(exchange, routing_key, queue)`` may raise `Fallback` once the route
    is known, before the signal is sent."""
    token = _route_check.set(route_check)
    try:
        return _prepare(app, target, args, kwargs, options)
    finally:
        _route_check.reset(token)


def _prepare(app: Any, target: Any, args: Sequence[Any] | None,
             kwargs: Mapping[str, Any] | None, options: dict[str, Any]) -> Outgoing:
    if app.conf.task_protocol != 2:
        raise Fallback("task_protocol 1")
    if app.conf.task_send_sent_event:
        raise Fallback("task_send_sent_event publishes an event per task")
    for name in ("producer", "connection", "publisher"):
        if options.get(name) is not None:
            raise TypeError(f"submit_async publishes on its own connection: {name}= is not "
                            "taken; drop it, or call apply_async in a thread")
    if hasattr(type(target), "_get_current_object"):  # a task not finalized yet: its proxy
        target = target._get_current_object()
    if isinstance(target, Signature):
        if type(target) is not Signature:
            raise Fallback("a canvas (chain, group, chord) publishes several messages")
        options = {k: v for k, v in options.items() if v is not None}
        if args or kwargs or options:
            args, kwargs, options = target._merge(args, kwargs, options)
        else:
            args, kwargs, options = target.args, target.kwargs, dict(target.options)
        try:
            task = target.type
        except KeyError:
            return _send_task(app, target["task"], args, kwargs, **options)
        return _apply_async(task, args, kwargs, **options)
    if isinstance(target, Task):
        return _apply_async(target, args, kwargs, **options)
    return _send_task(app, target, args, kwargs, **options)


def _apply_async(task: Any, args: Any = None, kwargs: Any = None, task_id: Any = None,
                 link: Any = None, link_error: Any = None, shadow: Any = None,
                 **options: Any) -> Outgoing:
    """``Task.apply_async`` up to its ``send_task``."""
    if type(task).apply_async is not Task.apply_async:
        raise Fallback(f"{type(task).__name__} has its own apply_async")
    if task.__v2_compat__:
        raise Fallback("a Celery 3 compatible task class")
    if task.soft_time_limit and task.time_limit and task.soft_time_limit > task.time_limit:
        raise ValueError("soft_time_limit must be less than or equal to time_limit")
    if task.typing:
        try:
            check_arguments = task.__header__
        except AttributeError:
            pass
        else:
            check_arguments(*(args or ()), **(kwargs or {}))
    shadow = shadow or task.shadow_name(args, kwargs, options)
    options = dict(task._get_exec_options(), **options)
    dump = getattr(task, "_dump_pydantic_arguments", None)
    if dump is not None and options.get("serializer") != "pickle":
        args, kwargs = dump(args, kwargs)
    options.setdefault("ignore_result", task.ignore_result)
    app = task._get_app()
    if app.conf.task_always_eager:
        raise Fallback("task_always_eager runs the task in this process")
    return _send_task(app, task.name, args, kwargs, task_id=task_id, link=link,
                      link_error=link_error, result_cls=task.AsyncResult, shadow=shadow,
                      task_type=task, **options)


def _send_task(app: Any, name: str, args: Any = None, kwargs: Any = None,
               countdown: Any = None, eta: Any = None, task_id: Any = None,
               router: Any = None, result_cls: Any = None, expires: Any = _OMITTED,
               link: Any = None, link_error: Any = None, add_to_parent: bool = True,
               group_id: Any = None, group_index: Any = None, retries: int = 0,
               chord: Any = None, reply_to: Any = None, time_limit: Any = _OMITTED,
               soft_time_limit: Any = _OMITTED, root_id: Any = None, parent_id: Any = None,
               route_name: Any = None, shadow: Any = None, chain: Any = None,
               task_type: Any = None, replaced_task_nesting: int = 0,
               **options: Any) -> Outgoing:
    """``Celery.send_task`` up to its publish (same parameters, same defaults)."""
    amqp, conf = app.amqp, app.conf
    task_id = task_id or uuid()
    router = router or amqp.router
    if task_type is None:
        task_type = app._tasks.get(name)
        if task_type is not None and hasattr(task_type, "_get_exec_options"):
            found = {k: v for k, v in task_type._get_exec_options().items() if v is not None}
            options = dict(found, **options)
    # An explicit argument wins over the task's option, an explicit None included.
    time_limit = _explicit(options, "time_limit", time_limit)
    soft_time_limit = _explicit(options, "soft_time_limit", soft_time_limit)
    expires = _explicit(options, "expires", expires)
    ignore_result = options.pop("ignore_result", None)
    options = router.route(options, route_name or name, args, kwargs, task_type)
    if (eta or countdown) and _quorum_queues(app):
        queue = options.get("queue")
        if (queue.exchange.type if queue else options["exchange_type"]) != "direct":
            raise Fallback("native delayed delivery on quorum queues")
        log.warning("Direct exchanges are not supported with native delayed delivery.\n"
                    "%s is a direct exchange but should be a topic exchange or a fanout "
                    "exchange in order for native delayed delivery to work properly.\n"
                    "If quorum queues are used, this task may block the worker process "
                    "until the ETA arrives.", queue.exchange.name if queue else "")
    if expires is not None:
        options["expiration"] = _expires_s(app, expires, task_id)
    parent = None
    if not root_id or not parent_id:
        parent = app.current_worker_task
        if parent:
            root_id = root_id or parent.request.root_id or parent.request.id
            parent_id = parent_id or parent.request.id
            if conf.task_inherit_parent_priority:
                options.setdefault("priority", parent.request.delivery_info.get("priority"))
    message = amqp.create_task_message(
        task_id, name, args, kwargs, countdown, eta, group_id, group_index, expires, retries,
        chord, maybe_list(link), maybe_list(link_error), reply_to or app.thread_oid,
        time_limit, soft_time_limit, conf.task_send_sent_event, root_id, parent_id, shadow,
        chain, ignore_result=ignore_result, replaced_task_nesting=replaced_task_nesting,
        **options)
    for stamp in options.pop("stamped_headers", []):
        options.pop(stamp)
    outgoing = _send_task_message(app, name, message, **options)
    outgoing.task_id, outgoing.result_cls = task_id, result_cls
    outgoing.ignore_result, outgoing.add_to_parent = ignore_result, add_to_parent
    return outgoing


def _explicit(options: dict[str, Any], name: str, given: Any) -> Any:
    found = options.pop(name, None)
    return found if given is _OMITTED else given


def _quorum_queues(app: Any) -> bool:
    """Celery's own test of native delayed delivery (Celery 5.5+; this path runs on 5.7+)."""
    from celery.utils.quorum_queues import detect_quorum_queues

    return bool(detect_quorum_queues(app, _driver(app))[0])


def _driver(app: Any) -> str:
    from celery_floodgate.stats import guard_for

    guard = guard_for(app)
    return guard.broker_kind if guard is not None else ""


def _expires_s(app: Any, expires: Any, task_id: str) -> float:
    from celery.utils.time import subtract_datetimes  # Celery 5.5+; this path runs on 5.7+

    if isinstance(expires, datetime):
        expires_s = subtract_datetimes(expires, app.now()).total_seconds()
    elif isinstance(expires, str):
        expires_s = subtract_datetimes(isoparse(expires), app.now()).total_seconds()
    else:
        expires_s = expires
    if expires_s < 0:
        log.warning("%s has an expiration date in the past (%ss ago); its expiration is "
                    "set to 0 instead, as send_task does", task_id, -expires_s)
        expires_s = 0
    return expires_s  # type: ignore[no-any-return]


def _send_task_message(app: Any, name: str, message: Any, exchange: Any = None,
                       routing_key: Any = None, queue: Any = None, event_dispatcher: Any = None,
                       retry: Any = None, retry_policy: Any = None, serializer: Any = None,
                       delivery_mode: Any = None, compression: Any = None, declare: Any = None,
                       headers: Any = None, exchange_type: Any = None, timeout: Any = None,
                       confirm_timeout: Any = None, **kwargs: Any) -> Outgoing:
    """``AMQP.send_task_message`` (Celery's sender) and kombu's ``Producer.publish``."""
    amqp, conf = app.amqp, app.conf
    headers2, properties, body, _ = message
    if headers:
        headers2.update(headers)
    if kwargs:
        properties.update(kwargs)
    qname = queue
    if queue is None and exchange is None:
        queue = amqp.default_queue
    if queue is not None:
        if isinstance(queue, str):
            qname, queue = queue, amqp.queues[queue]
        else:
            qname = queue.name
    if delivery_mode is None:
        delivery_mode = getattr(getattr(queue, "exchange", None), "delivery_mode", None)
        delivery_mode = delivery_mode or conf.task_default_delivery_mode
    if exchange_type is None:
        exchange_type = getattr(getattr(queue, "exchange", None), "type", None) or "direct"
    if (not exchange or not routing_key) and exchange_type == "direct":
        exchange, routing_key = "", qname
    elif exchange is None:
        exchange = queue.exchange.name or amqp.default_exchange
        routing_key = routing_key or queue.routing_key or conf.task_default_routing_key
    if declare is None and queue and not isinstance(queue, Broadcast):
        declare = [queue]
    check = _route_check.get()
    if check is not None:
        check(exchange, routing_key, qname)
    policy = dict(conf.task_publish_retry_policy, **(retry_policy or {}))
    if signals.before_task_publish.receivers:
        signals.before_task_publish.send(
            sender=name, body=body, exchange=exchange, routing_key=routing_key,
            declare=declare, headers=headers2, properties=properties, retry_policy=policy)
    return _publish(body, serializer or conf.task_serializer,
                    compression or conf.task_compression, headers2, declare or [],
                    exchange, routing_key, delivery_mode, qname, name, **properties)


def _publish(raw_body: Any, serializer: str, compression: str | None, headers: dict[str, Any],
             declare: list[Any], exchange: Any, routing_key: str, delivery_mode: Any,
             qname: str | None, name: str, priority: int = 0, mandatory: bool = False,
             immediate: bool = False, content_type: str | None = None,
             content_encoding: str | None = None, expiration: float | None = None,
             **properties: Any) -> Outgoing:
    """kombu's ``Producer.publish`` and ``_prepare`` (a producer of the default exchange)."""
    if isinstance(exchange, Exchange):
        exchange_name = exchange.name
        delivery_mode = delivery_mode or exchange.delivery_mode
    else:
        exchange_name = exchange
    properties["delivery_mode"] = maybe_delivery_mode(delivery_mode)
    if expiration is not None:
        properties["expiration"] = str(int(expiration * 1000))
    if not content_type:
        content_type, content_encoding, body = dumps(raw_body, serializer=serializer)
    elif isinstance(raw_body, str):
        content_encoding = content_encoding or "utf-8"
        body = raw_body.encode(content_encoding)
    else:
        body, content_encoding = raw_body, content_encoding or "binary"
    if compression:
        body, headers["compression"] = compress(body, compression)
    reply_to = properties.get("reply_to")
    if reply_to is not None and not isinstance(reply_to, str):
        properties["reply_to"] = reply_to.name  # a Queue: kombu publishes its name
    return Outgoing("", name, qname, exchange_name, routing_key, body, content_type,
                    content_encoding or "", headers, properties, priority, declare, raw_body,
                    None, None, True)


def published(outgoing: Outgoing) -> None:
    """Celery's ``after_task_publish`` (and the deprecated ``task_sent``), after the broker
    accepted the message; sent only when a receiver is connected, as Celery checks."""
    if signals.after_task_publish.receivers:
        signals.after_task_publish.send(
            sender=outgoing.name, body=outgoing.raw_body, headers=outgoing.headers,
            exchange=outgoing.exchange, routing_key=outgoing.routing_key)
    if signals.task_sent.receivers:
        args, kwargs, _ = outgoing.raw_body
        headers = outgoing.headers
        signals.task_sent.send(sender=outgoing.name, task_id=headers["id"], task=outgoing.name,
                               args=args, kwargs=kwargs, eta=headers["eta"],
                               taskset=headers["group"])


def result_of(app: Any, outgoing: Outgoing) -> Any:
    """The AsyncResult ``send_task`` returns (added to the parent task's trail likewise)."""
    result = (outgoing.result_cls or app.AsyncResult)(outgoing.task_id)
    result.ignored = outgoing.ignore_result
    if outgoing.add_to_parent:
        parent = app.current_worker_task
        if parent:
            parent.add_trail(result)
    return result
