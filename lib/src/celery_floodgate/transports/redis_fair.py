"""Fair admission on Redis: shares and classes checked in the admission's own Lua call.

``admit_fair.lua`` counts each tenant's holding from the queue's lists themselves (its
header says how), checks the class's bound and the tenant's share, pushes, and draws
a refused caller's ticket in the line of what refused it (the queue's, the class's or
the tenant's), all in one call: exact under any number of concurrent submitters, and
one round trip, as a first-come admission. The single push (`.redis`) and the batch
(`celery_floodgate.batch`) both call `admit`; the asyncio path (`.aio_redis`) runs the
same call, built by `admit_arguments` and read by `parse_reply`.

Counts stay exact through a purge, a consumed message and a worker killed mid-batch,
because they are read from the lists' lengths; the one transient error is a message a
worker handed back (kombu's restore, at the consuming end): while it waits, the
oldest holding counted is one message off, and it is right again once it is taken.
Every process that pushes to a fair queue must install the same policy and key prefix.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery_floodgate.errors import QueueFull
from celery_floodgate.fairness import CRITICAL
from celery_floodgate.limits import RETRY_AFTER_MAX_S
from celery_floodgate.transports import LuaScript

if TYPE_CHECKING:
    from celery_floodgate.guard import Guard

ADMIT_FAIR = LuaScript("line.lua", "admit_fair.lua")
HELD = LuaScript("fair_held.lua")
#: A tenant's bookkeeping outlives its last admission by this long (its messages
#: waiting longer than that are no longer counted against its share).
SETS_TTL_S = 86_400


@dataclass(frozen=True)
class Reply:
    """What ``admit_fair.lua`` answered."""

    admitted: int
    depth: int              # in the lists, at the refusal (or after the last admission)
    wait_s: float | None    # the ticket; None: rate unknown
    reason: str             # "" if nothing was refused
    holding: int            # the tenant's, at the refusal
    share: int


def admit(guard: Guard, client: Any, queue: str, lists: list[str], bound: int, room: int,
          tenant: str, criticality: str, messages: list[tuple[int, str]]) -> Reply:
    """Push ``messages`` ((list index from 1, payload), in order) of one tenant and class
    until the first refusal; ``room``: the bound less what workers hold prefetched."""
    keys, args = admit_arguments(guard, queue, lists, bound, room, tenant, criticality, messages)
    return parse_reply(ADMIT_FAIR(client, keys, args))


def admit_arguments(guard: Guard, queue: str, lists: list[str], bound: int, room: int,
                    tenant: str, criticality: str, messages: list[tuple[int, str]]
                    ) -> tuple[list[str], tuple[Any, ...]]:
    """The keys and arguments of ``admit_fair.lua`` for `admit` (and its asyncio caller,
    `celery_floodgate.transports.aio_redis`)."""
    policy, keys = guard.fairness, guard.meter.keys
    assert policy is not None
    held = bound - room
    rate = guard.drain_rate(queue) or 0
    weighted = [x for pair in policy.weights.items() for x in pair]
    args = (len(lists), room, max(0, policy.class_bound(bound, criticality) - held),
            max(0, policy.watermark_depth(bound) - held), int(criticality == CRITICAL),
            tenant, policy.weight(tenant), rate, RETRY_AFTER_MAX_S,
            max(1, bound) / rate if rate else 0, guard.pending_tickets(queue),
            guard.pending_tickets(queue, f"class:{criticality}"),
            guard.pending_tickets(queue, f"tenant:{tenant}"), SETS_TTL_S,
            len(policy.weights), *weighted, *(x for pair in messages for x in pair))
    return [*lists, keys.ticket(queue), keys.line(queue, f"class:{criticality}"),
            keys.line(queue, f"tenant:{tenant}"),
            *(keys.fair(name, part) for name in lists
              for part in ("seq", "active", f"t:{tenant}"))], args


def parse_reply(reply: Any) -> Reply:
    """``admit_fair.lua``'s reply."""
    wait = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
    reason = reply[3].decode() if isinstance(reply[3], bytes) else str(reply[3])
    return Reply(int(reply[0]), int(reply[1]), float(wait) if wait not in ("", "-1") else None,
                 reason, int(reply[4]), int(reply[5]))


def refusal(guard: Guard, queue: str, reply: Reply, bound: int, room: int, tenant: str,
            criticality: str) -> QueueFull:
    """The QueueFull for a refused reply (counted and remembered by the guard)."""
    rate = guard.drain_rate(queue)
    line_rate = rate * reply.holding / max(1, reply.depth) if rate and reply.reason == "share" \
        else rate
    # the depth reported counts what workers hold, as the limit does
    return guard.refuse(queue, reply.depth + bound - room, bound, wait_s=reply.wait_s,
                        reason=reply.reason, tenant=tenant, criticality=criticality,
                        share=reply.share, rate=line_rate)


class RedisHeld:
    """``guard.tenancy`` on Redis: each tenant's holding, read from the lists as
    ``admit_fair.lua`` counts it (for ``floodgate status`` and metrics)."""

    def __init__(self, app: Any, guard: Guard) -> None:
        self._app = weakref.ref(app)
        self._keys = guard.meter.keys

    def held(self, queue: str) -> dict[str, int]:
        """Tenant -> messages waiting in ``queue`` (empty if the broker does not answer)."""
        app = self._app()
        if app is None:
            return {}
        try:
            with app.connection_for_write() as conn:
                channel = conn.default_channel
                lists = list(dict.fromkeys(channel._q_for_pri(queue, p)
                                           for p in channel.priority_steps))
                keys = [k for name in lists for k in (name, self._keys.fair(name, "seq"),
                                                      self._keys.fair(name, "active"))]
                flat = HELD(channel.client, keys, (f"{self._keys.prefix}:fair:",))
        except Exception:  # noqa: BLE001 - an unreachable broker is a reading, not an error
            return {}
        pairs = zip(flat[::2], flat[1::2])
        return {(t.decode() if isinstance(t, bytes) else t): int(n) for t, n in pairs}
