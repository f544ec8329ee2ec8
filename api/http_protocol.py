"""Uvicorn's httptools protocol, with a deadline for reading a request and a bound on its head.

Uvicorn (0.55, read in its source) bounds neither: on httptools a client that sends a
header byte every few seconds, or a body a byte at a time, holds its connection (and a
place under ``--limit-concurrency``) for as long as it likes, and the headers of a
request are buffered however large they grow (h11's ``h11_max_incomplete_event_size``
does not apply to httptools). A connection that never sends a byte is kept too: uvicorn
arms its keep-alive timer only after a response.

Here a request must arrive whole, head and body, within ``read_timeout_s`` of its
first byte; its head may take ``max_head_bytes``; one peer address may hold
``max_per_client`` connections at once (past that, 429 and closed), so one client
cannot fill ``--limit-concurrency`` with idle or trickling connections. Past the
deadline or the head's size the answer is 408 (or 431) if nothing has been sent for
that request yet, and the connection is closed either way. A connection that sends
nothing is closed after uvicorn's keep-alive timeout.

Hooked: ``connection_made``, ``data_received``, ``on_message_begin``,
``on_headers_complete``, ``on_message_complete``, ``connection_lost``, and the cycle's
``more_body``, ``response_started``, ``response_complete`` and ``disconnected``;
tests/unit/test_http_protocol.py fails if an upgrade of uvicorn renames one.
"""
from __future__ import annotations

import asyncio
import collections
import http
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


#: Open connections per peer address in this process.
_open_by_peer: collections.Counter = collections.Counter()


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that closes slow-header and slow-body connections."""

    def __init__(self, *args: Any, read_timeout_s: float = 10.0,
                 max_head_bytes: int = 16_384, max_per_client: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_per_client = max_per_client  # 0: no cap (behind a proxy, one peer for all)
        self._peer: str | None = None
        self.read_timeout_s = read_timeout_s
        self.max_head_bytes = max_head_bytes
        # One timer per connection, not per request: when it fires it checks the current
        # request's start and re-arms for it, so a request costs a clock read, no timer.
        self._read_deadline: asyncio.TimerHandle | None = None
        self._reading = False  # from a request's first byte until its body is complete
        self._read_started = 0.0
        self._in_head = True   # until the current request's headers are complete
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if peer else None
        _open_by_peer[self._peer] += 1
        super().connection_made(transport)
        if self.max_per_client and self._peer is not None \
                and _open_by_peer[self._peer] > self.max_per_client:
            transport.write(_close_response(429, f"this address has {self.max_per_client} "
                                                 "connections open already"))
            transport.close()
            return
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        left = _open_by_peer[self._peer] - 1
        if left > 0:
            _open_by_peer[self._peer] = left
        else:
            _open_by_peer.pop(self._peer, None)
        self._reading = False
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._reading:
            self._start_clock()
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes:
            self._give_up(431, f"the request's head exceeds {self.max_head_bytes} bytes")

    # Parser callbacks: a request's head, then its body, complete.
    def on_message_begin(self) -> None:
        if not self._reading:  # a pipelined request, begun in the read that ended the last
            self._start_clock()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading, self._in_head = False, True
        super().on_message_complete()

    def _start_clock(self) -> None:
        self._reading = True
        self._read_started = self.loop.time()
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_at(self._read_started + self.read_timeout_s,
                                                    self._check_deadline)

    def _check_deadline(self) -> None:
        self._read_deadline = None
        if not self._reading:
            return
        due = self._read_started + self.read_timeout_s
        if self.loop.time() < due:  # a later request than the one that armed the timer
            self._read_deadline = self.loop.call_at(due, self._check_deadline)
        else:
            self._give_up(408, f"the request did not arrive whole within "
                               f"{self.read_timeout_s:g} s")

    def _give_up(self, status: int, problem: str) -> None:
        """Answer ``status`` if no response is under way on this connection; close it."""
        self._reading = False
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if not self.pipeline and (cycle is None or cycle.response_complete or (
                cycle.more_body and not cycle.response_started)):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # the app, waiting for the body, sees a disconnect
                cycle.message_event.set()
            self.transport.write(_close_response(status, problem))
        self.transport.close()


def _close_response(status: int, problem: str) -> bytes:
    reason = http.HTTPStatus(status).phrase
    body = f"{problem}; the connection is closed\n".encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body
