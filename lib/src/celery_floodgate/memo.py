"""Refusals answered in-process, for a moment after the broker refused.

Under overload most submissions are refused, and each would cost a broker round
trip plus building the message. But a queue the broker just found full gains a
slot only as its workers drain it: one slot per 1/rate seconds. So for that long
(at most ``MEMO_MAX_S``) after a broker refusal this process refuses the queue
itself, at no cost, and hands out tickets further down the same line. A free slot
left empty that long idles nobody: the queue still holds ``limit`` messages.

An admission by the broker forgets the refusal at once: the queue has room.
(Refusing the others only while one submission asks the broker again, a single
flight, was tried: a burst arriving just after the queue drained then had a round
trip's worth of its posts refused, wrongly.)

The limit stays exact (this only ever refuses); the next broker refusal skips the
slots handed out here (``pending``), so the shared line stays honest. Without a
measured drain rate nothing is remembered.

With fair admission (`celery_floodgate.fairness`) a refusal is remembered for what
it refused, its *scope*: the whole queue (``""``: at the limit everyone is refused),
a class (``"class:sheddable"``: that class and the ones shed before it) or a tenant
(``"tenant:acme"``: that tenant, not the others). A noisy tenant's refusal never
refuses a polite one here.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

#: The longest a broker refusal is remembered.
MEMO_MAX_S = 0.05


@dataclass
class _Full:
    """One queue's remembered refusal."""

    until: float      # monotonic: remembered until then
    depth: int
    bound: int
    next_slot: float  # monotonic: the next ticket this process hands out
    interval_s: float  # 1 / drain rate
    pending: int = 0   # tickets handed out here that the shared line has not seen
    share: int = 0     # the tenant's share, for a share refusal


class RefusalMemo:
    """The broker's recent refusals, per queue and scope, for one guard; thread-safe."""

    def __init__(self) -> None:
        self._full: dict[tuple[str, str], _Full] = {}
        self._lock = threading.Lock()

    def remember(self, queue: str, depth: int, bound: int, wait_s: float,
                 rate: float | None, scope: str = "", share: int = 0) -> None:
        """The broker refused ``queue`` (for ``scope``); this caller's ticket is ``wait_s`` away.

        ``rate``: how fast that scope's line moves (a tenant's: its part of the drain)."""
        if not rate:
            return
        now, interval_s = time.monotonic(), 1 / rate
        with self._lock:
            self._full[(queue, scope)] = _Full(now + min(interval_s, MEMO_MAX_S), depth, bound,
                                               now + wait_s + interval_s, interval_s,
                                               share=share)

    def refusal(self, queue: str, scopes: tuple[str, ...] = ("",)) -> (
            tuple[int, int, float, str, int] | None):
        """(depth, bound, seconds to this caller's ticket, scope, share) while ``queue`` is
        remembered refused for any of ``scopes``."""
        if not self._full:  # the usual case: no lock taken
            return None
        now = time.monotonic()
        for scope in scopes:
            full = self._full.get((queue, scope))
            if full is None or now >= full.until:
                continue
            with self._lock:
                slot = max(full.next_slot, now + full.interval_s)
                full.next_slot, full.pending = slot + full.interval_s, full.pending + 1
                return full.depth, full.bound, slot - now, scope, full.share
        return None

    def admitted(self, queue: str, scopes: tuple[str, ...] = ("",)) -> None:
        """The broker admitted a submission: forget the refusals it proves wrong now
        (the queue's, and those of ``scopes``)."""
        if self._full:
            with self._lock:
                for scope in scopes:
                    self._full.pop((queue, scope), None)

    def take_pending(self, queue: str, scope: str = "") -> int:
        """Tickets handed out here since the last broker refusal; counted once."""
        with self._lock:
            full = self._full.get((queue, scope))
            if full is None:
                return 0
            pending, full.pending = full.pending, 0
            return pending

    def clear(self) -> None:
        """Forget every refusal."""
        with self._lock:
            self._full.clear()
