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


class RefusalMemo:
    """The broker's recent refusals, per queue, for one guard; thread-safe."""

    def __init__(self) -> None:
        self._full: dict[str, _Full] = {}
        self._lock = threading.Lock()

    def remember(self, queue: str, depth: int, bound: int, wait_s: float,
                 rate: float | None) -> None:
        """The broker refused ``queue``; its ticket for this caller is ``wait_s`` away."""
        if not rate:
            return
        now, interval_s = time.monotonic(), 1 / rate
        with self._lock:
            self._full[queue] = _Full(now + min(interval_s, MEMO_MAX_S), depth, bound,
                                      now + wait_s + interval_s, interval_s)

    def refusal(self, queue: str) -> tuple[int, int, float] | None:
        """(depth, bound, seconds to this caller's ticket) while ``queue`` is remembered full."""
        full, now = self._full.get(queue), time.monotonic()
        if full is None or now >= full.until:  # the usual case: no lock taken
            return None
        with self._lock:
            slot = max(full.next_slot, now + full.interval_s)
            full.next_slot, full.pending = slot + full.interval_s, full.pending + 1
            return full.depth, full.bound, slot - now

    def admitted(self, queue: str) -> None:
        """The broker admitted a submission: the queue has room, so forget its refusal."""
        if queue in self._full:
            with self._lock:
                self._full.pop(queue, None)

    def take_pending(self, queue: str) -> int:
        """Tickets handed out here since the last broker refusal; counted once."""
        with self._lock:
            full = self._full.get(queue)
            if full is None:
                return 0
            pending, full.pending = full.pending, 0
            return pending

    def clear(self) -> None:
        """Forget every refusal."""
        with self._lock:
            self._full.clear()
