"""Limits, the policy's constants and the meter's Redis keys. Plain data: no I/O.

A limit is a length (``500``) or a maximum wait (``"30s"``). A wait limit admits
while depth / measured drain rate stays under the wait, so its length bound
follows the queue's real capacity.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

#: Hard ceiling on any queue, also the RabbitMQ x-max-length of a wait-limited queue.
MAX_LENGTH = 1_000_000
#: The longest wait limit accepted.
MAX_WAIT_S = 3600
#: Until a drain rate is measured, a wait-limited queue admits this many.
WAIT_LIMIT_BOOTSTRAP_LENGTH = 100
#: Retry-After is clamped to this range.
RETRY_AFTER_MIN_S = 1
RETRY_AFTER_MAX_S = 60
#: Retry-After while the drain rate is unknown (no backlogged second in the look-back).
RETRY_AFTER_UNMEASURED_S = 5
#: Drain rate is averaged over this many whole seconds in which the queue had a
#: backlog (quiet seconds say how much arrived, not how fast workers can drain)...
DRAIN_WINDOW_S = 5
#: ...found within this look-back; with none, the rate is unknown.
DRAIN_LOOKBACK_S = 60
#: Of those, the most recent this many: a drop in the rate is believed within seconds.
FAST_WINDOW_S = 2
#: A worker's prefetch window counts against its queue's limit (Redis) while the
#: worker has reported it within this many seconds.
WINDOW_FRESH_S = 3
#: The meter's per-second buckets live this long.
BUCKET_TTL_S = 120
#: How long a process trusts a drain rate or a prefetch total it read.
RATE_CACHE_S = 1.0


@dataclass(frozen=True)
class Limit:
    """One queue's limit: a length, or a maximum wait (exactly one of the two is set).

    Build it with `parse_limit`, which checks the range.

    :param queue: the queue it bounds.
    :param length: at most this many messages wait (ready, plus prefetched on Redis).
    :param wait_s: at most this many seconds of work wait: the length bound is
        ``wait_s`` x the measured drain rate (Redis only).
    """

    queue: str
    length: int | None = None
    wait_s: float | None = None

    def describe(self) -> str:
        """The limit as written in a spec: ``"500"`` or ``"30s"``."""
        return f"{self.length}" if self.length is not None else f"{self.wait_s:g}s"


_VALUE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s?)\s*$")
_ITEM = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*=(.*)$")


def parse_limit(queue: str, value: int | str) -> Limit:
    """Parse one queue's limit: ``500`` or ``"500"`` is a length, ``"30s"`` a wait.

    :param queue: the queue the limit is for (named in the error).
    :param value: a length 1 to 1,000,000, or a wait of up to 3600 seconds
        written with an ``s``.
    :returns: the `Limit`.
    :raises ValueError: with a sentence naming the queue and the accepted forms.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"limit for {queue!r} must be a length (500) or a wait ('30s'), "
                         f"not {value!r}")
    match = _VALUE.match(str(value))
    if not match:
        raise ValueError(f"limit for {queue!r} is {value!r}: expected a length (500) "
                         "or a wait ('30s')")
    number, unit = float(match.group(1)), match.group(2)
    if unit:
        if not 0 < number <= MAX_WAIT_S:
            raise ValueError(f"wait limit for {queue!r} must be between 0 and {MAX_WAIT_S} s")
        return Limit(queue, wait_s=number)
    if number != int(number) or not 1 <= number <= MAX_LENGTH:
        raise ValueError(f"length limit for {queue!r} must be a whole number 1..{MAX_LENGTH}")
    return Limit(queue, length=int(number))


def parse_limits(spec: Mapping[str, int | str] | str) -> dict[str, Limit]:
    """Parse every queue's limit, as `install` takes them.

    :param spec: a mapping ``{"emails": 500, "reports": "30s"}`` or the same as
        text, ``"emails=500,reports=30s"`` (e.g. from an environment variable).
    :returns: queue name -> `Limit`.
    :raises ValueError: with a sentence naming the item that does not parse.
    """
    if isinstance(spec, str):
        items: dict[str, int | str] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            match = _ITEM.match(part)
            if not match:
                raise ValueError(f"{part!r} is not queue=length or queue=<seconds>s")
            items[match.group(1)] = match.group(2).strip()
        spec = items
    return {queue: parse_limit(queue, value) for queue, value in spec.items()}


@dataclass(frozen=True)
class Keys:
    """The meter's and the guard's Redis keys, under one prefix per app."""

    prefix: str

    def drained(self, queue: str, epoch_s: int) -> str:
        """Counter of messages taken off ``queue`` in second ``epoch_s``."""
        return f"{self.prefix}:drained:{queue}:{epoch_s}"

    def backlog(self, queue: str, epoch_s: int) -> str:
        """Flag: ``queue`` had a backlog in second ``epoch_s``."""
        return f"{self.prefix}:backlog:{queue}:{epoch_s}"

    def window(self, queue: str, broker: str) -> str:
        """Hash of worker -> "prefetch window|epoch s" for the workers consuming ``queue``."""
        return f"{self.prefix}:window:{broker}:{queue}"

    def ticket(self, queue: str) -> str:
        """The next free slot of ``queue``'s virtual waiting line (Retry-After tickets)."""
        return f"{self.prefix}:ticket:{queue}"

    def line(self, queue: str, scope: str) -> str:
        """A waiting line of its own: ``scope`` is ``"class:<class>"`` or ``"tenant:<name>"``,
        so a tenant over its share, or a shed class, queues behind its own refusals only."""
        return f"{self.prefix}:ticket:{queue}:{scope}"

    def fair(self, list_name: str, part: str) -> str:
        """Redis fair admission's bookkeeping of one broker list (``admit_fair.lua``):
        ``part`` is ``"seq"``, ``"active"`` or ``"t:<tenant>"``."""
        return f"{self.prefix}:fair:{list_name}:{part}"

    def redeliveries(self, task_id: str) -> str:
        """How often the message of ``task_id`` was delivered again."""
        return f"{self.prefix}:redeliveries:{task_id}"
