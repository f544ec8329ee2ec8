"""Refusals answered in-process, for a moment after the broker refused.

Under overload most submissions are refused, and each would cost a broker round
trip plus building the message. But a queue the broker just found full gains a
slot only as its workers drain it: one slot per 1/rate seconds. So for that long
(at most ``MEMO_MAX_S``) after a broker refusal this process refuses the queue
itself, at no cost, and hands out tickets further down the same line. A free slot
left empty that long idles nobody: the queue still holds ``limit`` messages.

When the moment is over, one submission goes to the broker to find out (the
*probe*); until it is answered, at most ``MEMO_MAX_S``, the others are still
refused here. Otherwise every request arriving during that round trip would build
a message and queue for the broker too, and under a tenfold overload about half of
them did (bench (f)). An admission forgets the refusal: the queue has room.

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
class Full:
    until: float      # monotonic: remembered until then
    depth: int
    bound: int
    next_slot: float  # monotonic: the next ticket this process hands out
    interval_s: float  # 1 / drain rate
    pending: int = 0   # tickets handed out here that the shared line has not seen
    probe_until: float = 0.0  # monotonic: a submission is asking the broker until then


class RefusalMemo:
    def __init__(self) -> None:
        self._full: dict[str, Full] = {}
        self._lock = threading.Lock()

    def remember(self, queue: str, depth: int, bound: int, wait_s: float,
                 rate: float | None) -> None:
        """The broker refused ``queue``; its ticket for this caller is ``wait_s`` away."""
        if not rate:
            return
        now, interval_s = time.monotonic(), 1 / rate
        with self._lock:
            self._full[queue] = Full(now + min(interval_s, MEMO_MAX_S), depth, bound,
                                     now + wait_s + interval_s, interval_s)

    def refusal(self, queue: str, claim: bool = True) -> tuple[int, int, float] | None:
        """(depth, bound, seconds to this caller's ticket) while ``queue`` is remembered full.

        None means "ask the broker". Once the remembered moment is over, the first caller
        with ``claim`` becomes the probe and gets None; the others are refused until the
        probe is answered (:meth:`remember`, :meth:`admitted`) or ``MEMO_MAX_S`` passes.
        ``claim=False`` only looks: a caller that will reach the broker through a
        claiming path (Celery's router) later.
        """
        full = self._full.get(queue)
        if full is None:  # the usual case: no lock taken
            return None
        now = time.monotonic()
        with self._lock:
            if now >= full.until:
                if now >= full.probe_until:
                    if claim:
                        full.probe_until = now + MEMO_MAX_S
                    return None
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
        with self._lock:
            self._full.clear()
