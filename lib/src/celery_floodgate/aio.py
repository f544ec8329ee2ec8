"""Guarded submission for asyncio: ``await`` a task's publish without blocking the loop.

    from celery_floodgate.aio import submit_async, submit_many_async

    result = await submit_async(app, "shop.send_email", ("ann@x",), countdown=10)
    batch = await submit_many_async(app, "shop.send_email", [("ann@x",), ("bob@x",)])

The message is Celery's own (`celery_floodgate.aio_message`: ``apply_async`` and
``send_task``'s steps, the app's router and ``app.amqp.create_task_message``), so a
worker receives what ``send_task`` would have sent, and Celery's
``before_task_publish``/``after_task_publish`` fire (when receivers are connected).
It is admitted as on the threaded path, with the same exactness, `QueueFull` and
Retry-After:

* **Redis**: ``redis.asyncio`` runs the same Lua scripts
  (`celery_floodgate.transports.aio_redis`).
* **RabbitMQ**: aio-pika publishes with publisher confirms on one channel per app and
  event loop, confirms pipelined (`celery_floodgate.transports.aio_amqp`; the
  ``[asyncio]`` extra).
* **SQS**, and what the async path does not follow (eager apps, canvases, ``task_send_sent_event``, a
  task class with its own ``apply_async``, Redis Sentinel or ``global_keyprefix``, an
  exchange other than the default one on Redis, RabbitMQ with ``broker_use_ssl``
  options, the ``rpc://`` result backend): Celery's own ``send_task`` in a small thread
  pool (`FALLBACK_THREADS`). docs/async.md lists them.

Cancellation: a submission cancelled before its message went to the broker leaves
nothing. Once the message is on its way the broker decides atomically; a cancel then
waits for that answer (at most ``publish_timeout_s``), and an admitted submission
returns its result instead of raising CancelledError, so a caller never loses track
of a message that was enqueued. The first submission of a queue declares it through
the app's own (blocking) connection, once, in a thread, as Celery declares it once.
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import celery

from celery_floodgate.aio_message import Fallback, Outgoing, prepare, published, result_of
from celery_floodgate.batch import BatchResult, _route, items, submit_many
from celery_floodgate.stats import guard_for

if TYPE_CHECKING:
    from celery.result import AsyncResult

    from celery_floodgate.guard import Guard

__all__ = ["FALLBACK_THREADS", "close_async", "submit_async", "submit_many_async"]

FALLBACK_THREADS = 8
"""Threads that send what the async path does not follow (SQS among them) through Celery."""
#: The Celery release whose ``send_task`` the async path follows to the byte
#: (`celery_floodgate.aio_message`); an older one sends through Celery in the pool.
NATIVE_SINCE = (5, 7)

T = TypeVar("T")
_executor: ThreadPoolExecutor | None = None
_states: "weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, _State]]" = (
    weakref.WeakKeyDictionary())


class _State:
    """One app's async publisher on one event loop."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.publisher: Any = None
        self.fallback: str | None = None
        self.declared: set[int] = set()
        self.ready = asyncio.Lock()
        self.set_up = False

    def route_check(self, exchange: str, routing_key: str, qname: str | None) -> None:
        if exchange and self.guard.broker_kind == "redis":
            raise Fallback(f"exchange {exchange!r} on Redis (its bindings live in Redis)")

    async def set_up_once(self, app: Any) -> None:
        async with self.ready:
            if self.set_up:
                return
            try:
                self.publisher = await _publisher(app, self.guard)
            except Fallback as why:
                self.fallback = str(why)
            self.set_up = True

    async def declare(self, app: Any, entities: Sequence[Any]) -> None:
        """Declare what kombu would before its first publish, once (in a thread)."""
        new = [e for e in entities if hash(e) not in self.declared]
        if new:
            await asyncio.to_thread(_declare, app, new)
            self.declared.update(hash(e) for e in new)


async def _publisher(app: Any, guard: Guard) -> Any:
    if NATIVE_SINCE > _celery_version():
        raise Fallback(f"Celery {celery.__version__}: the async path builds the message as "
                       "Celery {}.{} does".format(*NATIVE_SINCE))
    if str(app.conf.result_backend or "").startswith("rpc"):
        raise Fallback("the rpc:// result backend declares its reply queue per send")
    if guard.broker_kind == "redis":
        from celery_floodgate.transports.aio_redis import RedisAdmitter, read_settings

        return RedisAdmitter(guard, await asyncio.to_thread(read_settings, app))
    if guard.broker_kind == "amqp":
        if isinstance(app.conf.broker_use_ssl, Mapping) and app.conf.broker_use_ssl:
            raise Fallback("broker_use_ssl options on RabbitMQ")
        try:
            from celery_floodgate.transports.aio_amqp import AmqpPublisher
        except ImportError as exc:
            raise ImportError("submit_async on RabbitMQ needs aio-pika: install "
                              "celery-floodgate[asyncio]") from exc
        conn = app.connection_for_write()
        url = conn.as_uri(include_password=True)
        return AmqpPublisher(guard, url, float(app.conf.broker_connection_timeout or 4.0))
    raise Fallback(f"the {guard.broker_kind} broker")


def _declare(app: Any, entities: list[Any]) -> None:
    with app.producer_or_acquire() as producer:
        for entity in entities:
            producer.maybe_declare(entity)


async def _state_of(app: Any, guard: Guard) -> _State:
    loop = asyncio.get_running_loop()
    per_loop = _states.get(app)
    if per_loop is None:
        per_loop = _states[app] = weakref.WeakKeyDictionary()
    state = per_loop.get(loop)
    if state is None or state.guard is not guard:
        state = per_loop[loop] = _State(guard)
    if not state.set_up:
        await state.set_up_once(app)
    return state


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(FALLBACK_THREADS, thread_name_prefix="floodgate-aio")
    return _executor


async def _in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn`` in the pool. A thread cannot be stopped, so a cancel waits for its answer
    as the native path does: a message it enqueued is returned, never lost track of."""
    loop = asyncio.get_running_loop()
    # The caller's context goes along: the tenant and class (fairness.submitting_as).
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    future = loop.run_in_executor(_pool(), call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        try:
            return await future
        except Exception:  # refused or failed: nothing was enqueued, so the cancel stands
            raise asyncio.CancelledError from None


def _celery_version() -> tuple[int, int]:
    major, minor = celery.__version__.split(".")[:2]
    return int(major), int(minor)


def _send_sync(app: Any, target: Any, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
    if isinstance(target, str):
        return app.send_task(target, args, kwargs, **options)
    return target.apply_async(args, kwargs, **options)


async def submit_async(app: Any, name_or_signature: Any, args: Sequence[Any] | None = (),
                       kwargs: Mapping[str, Any] | None = None,
                       **options: Any) -> AsyncResult:
    """Submit one task, as ``apply_async``/``send_task`` would, without blocking the loop.

    :param app: the Celery app, with `celery_floodgate.install` called.
    :param name_or_signature: a task's registered name, the task itself, or a task's
        signature (``add.s(1)``: its arguments and options are merged as
        ``Signature.apply_async`` merges them).
    :param args: positional arguments; ``kwargs``: keyword arguments.
    :param options: what ``apply_async`` takes (``countdown``, ``eta``, ``expires``,
        ``priority``, ``queue``, ``headers``, ``task_id``, ``link``...).
    :returns: the task's ``AsyncResult``.
    :raises QueueFull: the queue (or the tenant's share, or its class) is full;
        nothing was enqueued; retry after ``retry_after_s``.
    :raises BrokerUnavailable: the broker did not answer or confirm in
        ``publish_timeout_s`` (after a confirm timeout the message may have landed).
    :raises EtaTooFar: the countdown is longer than the broker holds a message.
    """
    guard = guard_for(app)
    options = dict(options)
    if guard is None:
        return await _in_thread(_send_sync, app, name_or_signature, args, kwargs, options)
    state = await _state_of(app, guard)
    if state.fallback is None:
        try:
            out = prepare(app, name_or_signature, args, kwargs, dict(options),
                          route_check=state.route_check)
        except Fallback:
            pass
        else:
            await state.declare(app, out.declare)
            await state.publisher.submit(out)
            published(out)
            return result_of(app, out)
    return await _in_thread(_send_sync, app, name_or_signature, args, kwargs, options)


async def submit_many_async(app: Any, task_name: str, args_list: Sequence[Sequence[Any]], *,
                            kwargs_list: Sequence[Mapping[str, Any]] | None = None,
                            queue: str | None = None, task_ids: Sequence[str] | None = None,
                            **options: Any) -> BatchResult:
    """`celery_floodgate.submit_many`, awaited: exactly what fits is admitted, in order,
    and every other item is reported refused (never raised).

    On Redis the batch is one Lua call per 1000 items; on RabbitMQ every message is
    published at once on the shared channel and the confirms are awaited together. A
    queue the guard does not bound, and every case the async path does not follow, go
    through `submit_many` in a thread.

    :returns: a `BatchResult` (``ids``, ``accepted``, ``refused``).
    :raises ValueError: the lists differ in length, or the items name several tenants
        or classes under fair admission.
    :raises BrokerUnavailable: the broker did not answer or confirm in time.
    """
    n, kwargs_list, ids = items(args_list, kwargs_list, task_ids)
    result = BatchResult(ids=ids)
    if not n:
        return result
    guard = guard_for(app)
    threaded: Callable[[], BatchResult] = functools.partial(submit_many, app, task_name, args_list,
                                 kwargs_list=kwargs_list, queue=queue, task_ids=ids, **options)
    if guard is None:
        return await _in_thread(threaded)
    qname = _route(app, task_name, queue, dict(options))["queue"].name
    limit = guard.limit_for(qname)
    state = await _state_of(app, guard)
    if limit is None or state.fallback is not None:
        return await _in_thread(threaded)
    try:
        outs = _prepare_batch(app, state, task_name, args_list, kwargs_list, ids, queue, options)
    except Fallback:
        return await _in_thread(threaded)
    if any(out.routing_key != qname or out.exchange for out in outs):
        raise ValueError("batch submission needs a direct route to one queue")
    await state.declare(app, outs[0].declare)
    result.refused = await state.publisher.submit_many(qname, limit, outs)
    gone = {i for i, _ in result.refused}
    for i, out in enumerate(outs):
        if i not in gone:
            published(out)
    result.accepted = [ids[i] for i in range(n) if i not in gone]
    return result


class _Unguarded:
    """A router answering the route without the remembered refusal: a batch asks the
    broker, which admits what fits (as `submit_many`)."""

    def __init__(self, app: Any) -> None:
        router = app.amqp.router
        self.route = getattr(router, "route_unguarded", router.route)


def _prepare_batch(app: Any, state: _State, task_name: str,
                   args_list: Sequence[Sequence[Any]], kwargs_list: list[Mapping[str, Any]],
                   ids: list[str], queue: str | None, options: dict[str, Any]) -> list[Outgoing]:
    router = _Unguarded(app)
    extra = {"queue": queue} if queue is not None else {}
    return [prepare(app, task_name, args, kwargs,
                    {**options, **extra, "task_id": task_id, "router": router},
                    route_check=state.route_check)
            for args, kwargs, task_id in zip(args_list, kwargs_list, ids)]


async def close_async(app: Any) -> None:
    """Close ``app``'s async connections on the running event loop (a service's shutdown);
    the next submission opens them again."""
    per_loop = _states.get(app)
    state = per_loop.pop(asyncio.get_running_loop(), None) if per_loop is not None else None
    if state is not None and state.publisher is not None:
        await state.publisher.close()

