"""Batch submission: many jobs in one call, the limit honoured exactly, refusals reported.

    from celery_floodgate.batch import submit_many

    result = submit_many(app, "shop.send_email", [("ann@x",), ("bob@x",)])
    result.accepted            # task ids admitted, in submission order
    result.refused             # [(index, QueueFull)], nothing enqueued for them

Celery builds every message (``app.amqp.create_task_message``, then its own
``send_task_message``, so routing, headers, signals and serialisation are the ones
``send_task`` uses and workers take them unchanged); only the last step differs:
instead of one publish and one broker round trip per message,

* **Redis**: one Lua call (``admit_many.lua``) counts the queue, pushes as many
  messages as fit - in order, atomically, so concurrent batches and single
  submissions never overshoot the limit between them - and refuses the rest,
  drawing one Retry-After ticket for the first refused (the others get the same
  wait: they belong to one caller who comes back once). Batches larger than
  ``SCRIPT_MESSAGES`` take one call per slice; after a slice with a refusal the
  rest is refused without another call.
* **RabbitMQ**: on a channel of its own (publisher confirms selected once), every
  message is published without waiting, then the confirms are awaited once for
  the whole batch. ``x-max-length`` with ``reject-publish`` makes the broker nack
  exactly the messages past the limit, whoever else publishes meanwhile; a nacked
  message is refused. No confirm in ``publish_timeout_s`` -> BrokerUnavailable for
  the whole call (the connection is dropped: which messages landed is unknown, as
  for a single publish that times out).

A batch goes to one queue (the task's route, or ``queue=``). ``BrokerUnavailable``
is raised when the broker cannot be reached; a refusal is never raised, it is
reported per item.
"""
from __future__ import annotations

import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from amqp import spec
from celery.utils import uuid
from kombu.common import maybe_declare
from kombu.exceptions import KombuError, OperationalError
from kombu.messaging import Producer
from kombu.utils.json import dumps

from celery_floodgate.errors import BrokerUnavailable, QueueFull
from celery_floodgate.fairness import identify_batch
from celery_floodgate.limits import RETRY_AFTER_MAX_S
from celery_floodgate.stats import guard_for
from celery_floodgate.transports import LuaScript, redis_fair

if TYPE_CHECKING:
    from celery import Celery
    from kombu.connection import Connection

    from celery_floodgate.guard import Guard
    from celery_floodgate.limits import Limit

_ADMIT_MANY = LuaScript("line.lua", "admit_many.lua")
SENT_AT_HEADER = "fg_sent_at"  # as transports/redis.py
#: Messages per Lua call: bounds the script's argument list and the time Redis is held.
SCRIPT_MESSAGES = 1000
#: The attribute of a pooled AMQP connection holding its batch channel.
_BATCH_CHANNEL = "_fg_batch_channel"

#: A prepared message, kept instead of published: (message, exchange, routing key).
_Kept = tuple[Any, str, str]


@dataclass
class BatchResult:
    """What became of each item of a `submit_many` call.

    :param ids: item i's task id at ``ids[i]``, whether admitted or not.
    :param accepted: the ids admitted (enqueued), in submission order.
    :param refused: ``(index, QueueFull)`` of each item refused; nothing was
        enqueued for them.
    """

    ids: list[str]
    accepted: list[str] = field(default_factory=list)
    refused: list[tuple[int, QueueFull]] = field(default_factory=list)

    @property
    def retry_after_s(self) -> int | None:
        """When to come back with the refused items (None if none was refused)."""
        return min((e.retry_after_s for _, e in self.refused), default=None)

    def accepted_indexes(self) -> list[int]:
        """The indexes of the items admitted, in order."""
        refused = {i for i, _ in self.refused}
        return [i for i in range(len(self.ids)) if i not in refused]


class _Collector:
    """Stands in for a channel under a kombu Producer: Celery prepares each message
    on the real channel (so it is exactly what ``send_task`` would publish) and
    ``basic_publish`` keeps it instead of sending it."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self.kept: list[_Kept] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    def basic_publish(self, message: Any, exchange: str = "", routing_key: str = "",
                      **_: Any) -> None:
        self.kept.append((message, exchange, routing_key))


def submit_many(app: Celery, task_name: str, args_list: Sequence[Sequence[Any]], *,
                kwargs_list: Sequence[Mapping[str, Any]] | None = None,
                queue: str | None = None, task_ids: Sequence[str] | None = None,
                **options: Any) -> BatchResult:
    """Submit ``task_name`` once per item of ``args_list``, admitting exactly what fits.

    On a bounded queue of Redis or RabbitMQ the whole batch costs one broker
    round trip (per 1000 items on Redis) and the limit holds exactly, whoever else
    submits meanwhile; elsewhere each item is one ordinary ``send_task``. A
    refusal is never raised: it is reported per item. See the module docstring.

    :param app: the Celery app, with `celery_floodgate.install` called.
    :param task_name: the registered name of the task.
    :param args_list: each item's positional arguments.
    :param kwargs_list: each item's keyword arguments (default: none).
    :param queue: the queue for every item (default: the task's route).
    :param task_ids: the ids to use, one per item (the caller's own, e.g. job ids;
        default: fresh UUIDs).
    :param options: what ``send_task`` takes, for every message
        (``ignore_result``, ``priority``, ``expires``...).
    :returns: a `BatchResult`: the ids, the accepted and the refused.
    :raises ValueError: when the lists differ in length, or the route is not a
        direct one to a queue.
    :raises BrokerUnavailable: when the broker cannot be reached or does not
        confirm in time (then which items landed is unknown).
    :raises EtaTooFar: when a countdown is longer than the broker holds one.
    """
    n, kwargs_list, ids = items(args_list, kwargs_list, task_ids)
    result = BatchResult(ids=ids)
    if not n:
        return result
    guard = guard_for(app)
    route = _route(app, task_name, queue, options)
    qname = route["queue"].name
    limit = guard.limit_for(qname) if guard else None
    try:
        with app.producer_or_acquire() as producer:
            conn = producer.connection
            with conn._reraise_as_library_errors():
                if guard is None or limit is None or guard.broker_kind not in ("redis", "amqp"):
                    # Not a bounded queue of ours: one ordinary publish each.
                    for i in range(n):
                        app.send_task(task_name, args=args_list[i], kwargs=kwargs_list[i],
                                      task_id=ids[i], producer=producer, queue=route["queue"],
                                      **options)
                    result.accepted = ids
                    return result
                if guard.broker_kind == "redis":
                    channel = producer.channel
                    kept = _prepare(app, channel, task_name, args_list, kwargs_list, ids,
                                    route, options)
                    refused = _admit_redis(guard, channel, qname, limit, kept)
                else:
                    channel = _batch_channel(conn)
                    try:
                        maybe_declare(route["queue"], channel)
                        kept = _prepare(app, channel, task_name, args_list, kwargs_list, ids,
                                        route, options)
                        refused = _publish_confirmed(guard, conn, channel, qname, limit, kept)
                    except BaseException:
                        _forget_batch_channel(conn)
                        raise
    except BrokerUnavailable:
        raise
    except (OperationalError, KombuError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(qname, f"{type(exc).__name__}: {exc}"[:200]) from exc
    result.refused = refused
    gone = {i for i, _ in refused}
    result.accepted = [ids[i] for i in range(n) if i not in gone]
    return result


def items(args_list: Sequence[Sequence[Any]],
          kwargs_list: Sequence[Mapping[str, Any]] | None,
          task_ids: Sequence[str] | None) -> tuple[int, list[Mapping[str, Any]], list[str]]:
    """A batch's size, keyword arguments and ids (fresh where not given); ValueError
    unless each list has one entry per item."""
    n = len(args_list)
    kwargs = list(kwargs_list) if kwargs_list is not None else [{}] * n
    ids = list(task_ids) if task_ids is not None else [uuid() for _ in range(n)]
    if len(kwargs) != n or len(ids) != n:
        raise ValueError("args_list, kwargs_list and task_ids must have one entry per item")
    return n, kwargs, ids


def _route(app: Celery, task_name: str, queue: str | None,
           options: dict[str, Any]) -> dict[str, Any]:
    """The route ``send_task`` would take (the task's own options as defaults)."""
    task = app._tasks.get(task_name)
    defaults: dict[str, Any] = {}
    if task is not None and hasattr(task, "_get_exec_options"):
        defaults = {k: v for k, v in task._get_exec_options().items() if v is not None}
    merged = {**defaults, **options}
    if queue is not None:
        merged["queue"] = queue
    for key in ("time_limit", "soft_time_limit", "expires", "ignore_result"):
        merged.pop(key, None)
    # Not the router's remembered refusal (memo.py): a batch asks the broker, which
    # admits exactly what fits and refuses the rest item by item.
    router = app.amqp.router
    route = getattr(router, "route_unguarded", router.route)
    routed: dict[str, Any] = route(merged, task_name, (), {}, task)
    return routed


def _prepare(app: Celery, channel: Any, task_name: str, args_list: Sequence[Sequence[Any]],
             kwargs_list: Sequence[Mapping[str, Any]], ids: Sequence[str],
             route: dict[str, Any], options: dict[str, Any]) -> list[_Kept]:
    """Celery's messages, prepared on ``channel`` and kept (not sent)."""
    amqp = app.amqp
    collector = _Collector(channel)
    producer = Producer(collector, auto_declare=False)
    send = amqp.send_task_message
    task = app._tasks.get(task_name)
    exec_opts = task._get_exec_options() if task is not None and hasattr(
        task, "_get_exec_options") else {}
    time_limit = options.get("time_limit", exec_opts.get("time_limit"))
    soft = options.get("soft_time_limit", exec_opts.get("soft_time_limit"))
    expires = options.get("expires", exec_opts.get("expires"))
    ignore_result = options.get("ignore_result", exec_opts.get("ignore_result"))
    sent_event = app.conf.task_send_sent_event
    reply_to = app.thread_oid
    route_opts = dict(route)
    # Celery's saferepr of each message's arguments (and its settings look-ups) is most
    # of the cost of building a message; plain repr gives the same text for arguments
    # that fit argsrepr_maxsize, and saferepr still truncates the others.
    max_args, max_kwargs = amqp.argsrepr_maxsize, amqp.kwargsrepr_maxsize
    for i, args in enumerate(args_list):
        args = tuple(args)
        kwargs = kwargs_list[i]
        args_repr, kwargs_repr = repr(args), repr(kwargs)
        message = amqp.create_task_message(
            ids[i], task_name, args, kwargs, None, None, None, None, expires, 0,
            None, None, None, reply_to, time_limit, soft, sent_event, None, None, None, None,
            ignore_result=ignore_result,
            argsrepr=args_repr if len(args_repr) <= max_args else None,
            kwargsrepr=kwargs_repr if len(kwargs_repr) <= max_kwargs else None,
            **route_opts)
        send(producer, task_name, message, retry=False, declare=[], **route_opts)
    return collector.kept


def _admit_redis(guard: Guard, channel: Any, qname: str, limit: Limit,
                 kept: list[_Kept]) -> list[tuple[int, QueueFull]]:
    bound = guard.length_bound(limit)
    room = guard.room_in_broker(qname, channel.broker_id(), bound)
    lists = list(dict.fromkeys(channel._q_for_pri(qname, p) for p in channel.priority_steps))
    rate = guard.drain_rate(qname) or 0
    head = (room, rate, RETRY_AFTER_MAX_S, max(1, bound) / rate if rate else 0,
            guard.pending_tickets(qname))
    keys = [*lists, guard.meter.keys.ticket(qname)]
    now = time.time()
    payload = []
    for message, exchange, routing_key in kept:
        if exchange:  # Celery sends to a direct queue through the anonymous exchange
            raise ValueError(f"batch submission needs a direct route, not exchange {exchange!r}")
        headers = message.setdefault("headers", {})
        guard.check_eta(qname, headers.get("eta"))
        headers.setdefault(SENT_AT_HEADER, now)
        channel._inplace_augment_message(message, exchange, routing_key)
        target = channel._q_for_pri(qname, channel._get_message_priority(message, reverse=False))
        payload.append((lists.index(target) + 1, dumps(message)))
    client = channel._admit_client(guard)
    if guard.fairness is not None:
        return _admit_fair(guard, client, qname, lists, bound, room, kept, payload)
    refused: list[tuple[int, QueueFull]] = []
    for start in range(0, len(payload), SCRIPT_MESSAGES):
        part = payload[start:start + SCRIPT_MESSAGES]
        args = [*head, *(x for pair in part for x in pair)]
        try:
            reply = _ADMIT_MANY(client, keys, tuple(args))
        except Exception as exc:  # redis errors: timeouts and connection losses
            import redis

            if isinstance(exc, redis.RedisError):
                raise BrokerUnavailable(qname, f"{type(exc).__name__}: {exc}"[:200]) from None
            raise
        admitted, depth, wait = int(reply[0]), int(reply[1]), reply[2]
        for _ in range(admitted):
            guard.admitted(qname)
        if admitted < len(part):
            wait = wait.decode() if isinstance(wait, bytes) else wait
            wait_s = float(wait) if wait not in ("", "-1") else None
            # the depth reported counts what workers hold, as the limit does
            first = guard.refuse(qname, depth + admitted + bound - room, bound, wait_s=wait_s)
            refused.append((start + admitted, first))
            for i in range(start + admitted + 1, len(payload)):
                refused.append((i, _same(guard, qname, first)))
            break
    return refused


def _admit_fair(guard: Guard, client: Any, qname: str, lists: list[str], bound: int,
                room: int, kept: list[_Kept], payload: list[tuple[int, str]]
                ) -> list[tuple[int, QueueFull]]:
    """`_admit_redis` with shares and classes (`celery_floodgate.transports.redis_fair`):
    a batch is one tenant's, of one class."""
    tenant, criticality = identify_batch(message["headers"] for message, _, _ in kept)
    refused: list[tuple[int, QueueFull]] = []
    for start in range(0, len(payload), SCRIPT_MESSAGES):
        part = payload[start:start + SCRIPT_MESSAGES]
        try:
            reply = redis_fair.admit(guard, client, qname, lists, bound, room, tenant,
                                     criticality, part)
        except redis.RedisError as exc:  # timeouts and connection losses
            raise BrokerUnavailable(qname, f"{type(exc).__name__}: {exc}"[:200]) from None
        for _ in range(reply.admitted):
            guard.admitted(qname, tenant, criticality)
        if reply.admitted < len(part):
            first = redis_fair.refusal(guard, qname, reply, bound, room, tenant, criticality)
            refused.extend((i, first if i == start + reply.admitted else _same(guard, qname, first))
                           for i in range(start + reply.admitted, len(payload)))
            break
    return refused


def _same(guard: Guard, qname: str, first: QueueFull) -> QueueFull:
    """Another refusal of the same batch: counted, with the first one's wait (no round trip,
    and remembered once, by the first: `Guard.refuse`)."""
    return guard._refused(qname, first.depth, first.limit, first.retry_after_s, first.reason,
                          first.tenant, first.criticality, first.share)


def _batch_channel(conn: Connection) -> Any:
    """The pooled connection's batch channel: confirms selected once, its own tag count.

    Kept apart from the connection's default channel, whose publishes wait for their
    own confirms one by one; the pool hands a connection to one user at a time.
    """
    raw = conn.connection  # the py-amqp connection (connects if needed)
    channel = getattr(raw, _BATCH_CHANNEL, None)
    if channel is None or not channel.is_open:
        channel = conn.channel()
        channel.confirm_select()
        channel._confirm_selected = True
        channel._fg_next_tag = 1
        setattr(raw, _BATCH_CHANNEL, channel)
    return channel


def _forget_batch_channel(conn: Connection) -> None:
    """After any failure the channel's delivery tags are unknown: open a new one next time."""
    raw = getattr(conn, "_connection", None)
    channel = getattr(raw, _BATCH_CHANNEL, None) if raw is not None else None
    if channel is None:
        return
    setattr(raw, _BATCH_CHANNEL, None)
    try:
        channel.close()
    except Exception:  # noqa: BLE001 - the connection may be gone already
        pass


def _publish_confirmed(guard: Guard, conn: Connection, channel: Any, qname: str, limit: Limit,
                       kept: list[_Kept]) -> list[tuple[int, QueueFull]]:
    """Publish every message, then wait once for all their confirms; nacked ones are refused.

    With fair admission the batch (one tenant's, of one class) first reserves its places
    in the meter, in one call (`celery_floodgate.tenants`): the messages past the
    tenant's share or its class's bound are refused unsent, and nacked ones give theirs
    back."""
    from celery_floodgate.tenants import EPOCH_HEADER, tenancy_of  # here: batch.py's own

    now = time.time()
    tenancy = tenancy_of(guard)
    tenant = criticality = None
    epoch = None
    meter_refused: QueueFull | None = None
    for message, _, _ in kept:
        headers = message.properties.setdefault("application_headers", {})
        guard.check_eta(qname, headers.get("eta"))
        headers.setdefault(SENT_AT_HEADER, now)
    if tenancy is not None:
        tenant, criticality = identify_batch(
            message.properties["application_headers"] for message, _, _ in kept)
        bound = guard.length_bound(limit)
        reservation = tenancy.reserve(qname, tenant, criticality, bound, n=len(kept))
        epoch = reservation.epoch
        if not reservation.admit:
            meter_refused = tenancy.refusal(qname, reservation, bound, tenant, criticality)
        for message, _, _ in kept[:reservation.reserved]:
            if epoch is not None:
                message.properties["application_headers"][EPOCH_HEADER] = epoch
        sent = kept[:reservation.reserved]
    else:
        sent = kept
    first_tag = channel._fg_next_tag
    n = len(sent)
    last_tag = first_tag + n - 1
    acked = bytearray(n)   # 0 pending, 1 acked, 2 nacked
    pending = [n]

    def mark(delivery_tag: int, multiple: bool, value: int) -> None:
        low = first_tag if multiple else delivery_tag
        for tag in range(max(low, first_tag), min(delivery_tag, last_tag) + 1):
            i = tag - first_tag
            if not acked[i]:
                acked[i] = value
                pending[0] -= 1

    on_ack = lambda tag, multiple: mark(tag, multiple, 1)  # noqa: E731
    on_nack = lambda tag, multiple: mark(tag, multiple, 2)  # noqa: E731
    channel.events["basic_ack"].add(on_ack)
    channel.events["basic_nack"].add(on_nack)
    try:
        try:
            for message, exchange, routing_key in sent:
                channel._basic_publish(message, exchange, routing_key)
                channel._fg_next_tag += 1
            deadline = time.monotonic() + max(guard.publish_timeout_s, 0.001 * n)
            while pending[0]:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout()
                channel.wait([spec.Basic.Ack, spec.Basic.Nack], timeout=remaining)
        except socket.timeout:
            # A blocked broker never confirms: drop the socket rather than hang on close.
            # The places stay reserved: which messages landed is unknown (reconciled later).
            conn.collect()
            raise BrokerUnavailable(qname, "the broker did not confirm the batch in time") from None
    finally:
        channel.events["basic_ack"].discard(on_ack)
        channel.events["basic_nack"].discard(on_nack)
    refused: list[tuple[int, QueueFull]] = []
    first = None
    for i, state in enumerate(acked):
        if state == 1:
            guard.admitted(qname, tenant, criticality)
            continue
        bound = guard.length_bound(limit)
        first = (guard.refuse(qname, bound, bound, tenant=tenant, criticality=criticality)
                 if first is None else _same(guard, qname, first))
        refused.append((i, first))
    if tenancy is not None and refused:
        tenancy.release(qname, tenant or "", epoch, len(refused))
    if meter_refused is not None:
        refused.extend((i, meter_refused if i == n else _same(guard, qname, meter_refused))
                       for i in range(n, len(kept)))
    return refused
