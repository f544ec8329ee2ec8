"""RabbitMQ transport that turns a reject-publish nack into QueueFull.

The queue's ``x-max-length`` with ``x-overflow: reject-publish`` (declared by
`celery_floodgate.install`) makes RabbitMQ itself refuse the message
past the limit, atomically for every publisher; publisher confirms carry that
refusal back. A lost connection stays a connection error: only a nack means full.
With fair admission (``install(..., fairness=...)``) a publish first reserves its
tenant's place in the meter (`celery_floodgate.tenants`), and a nack gives it back.

Its plain-TCP connections read ahead (`ReadAheadTCPTransport`).
"""
from __future__ import annotations

import errno
import socket
import time
from typing import Any

from amqp.exceptions import MessageNacked
from amqp.transport import TCPTransport
from kombu.transport import pyamqp

from celery_floodgate.errors import BrokerUnavailable
from celery_floodgate.fairness import identify
from celery_floodgate.tenants import EPOCH_HEADER, tenancy_of
from celery_floodgate.transports import guard_of
from celery_floodgate.transports.redis import SENT_AT_HEADER


class Channel(pyamqp.Channel):  # type: ignore[misc]  # kombu is read as Any
    """kombu's py-amqp channel whose confirmed publish to a limited queue refuses with
    QueueFull when the broker nacks it, and times out instead of hanging."""

    def basic_publish_confirm(self, *args: Any, **kwargs: Any) -> Any:
        """Publish and wait for the confirm; a nack -> QueueFull, a timeout -> BrokerUnavailable."""
        routing_key = kwargs.get("routing_key", args[2] if len(args) > 2 else "")
        guard = guard_of(self.connection.client)
        if guard is None or (limit := guard.limit_for(routing_key)) is None:
            return super().basic_publish_confirm(*args, **kwargs)
        headers: dict[str, Any] = {}
        if args:
            headers = args[0].properties.setdefault("application_headers", {})
            guard.check_eta(routing_key, headers.get("eta"))
            headers.setdefault(SENT_AT_HEADER, time.time())
        # A blocked broker (memory or disk alarm) never confirms: time out instead of hanging.
        if not kwargs.get("confirm_timeout"):
            kwargs["confirm_timeout"] = guard.publish_timeout_s
        tenancy = tenancy_of(guard)
        if tenancy is None:
            tenant = criticality = None
            epoch = None
        else:  # the broker bounds the total; the meter, each tenant's share of it
            tenant, criticality = identify(headers)
            bound = guard.length_bound(limit)
            reservation = tenancy.reserve(routing_key, tenant, criticality, bound)
            if not reservation.admit:
                raise tenancy.refusal(routing_key, reservation, bound, tenant, criticality)
            epoch = reservation.epoch
            if epoch is not None:
                headers[EPOCH_HEADER] = epoch
        try:
            result = super().basic_publish_confirm(*args, **kwargs)
        except MessageNacked:
            bound = guard.length_bound(limit)
            if tenancy is not None:
                tenancy.release(routing_key, tenant, epoch)
            raise guard.refuse(routing_key, bound, bound, tenant=tenant,
                               criticality=criticality) from None
        except socket.timeout:
            # A blocked broker (memory alarm) reads nothing, so a polite close would
            # hang too: drop the socket and report the broker unavailable. The place
            # stays reserved: the message may have landed (reconcile repairs it if not).
            self.connection.collect()
            raise BrokerUnavailable(routing_key, "the broker did not confirm in time") from None
        guard.admitted(routing_key, tenant, criticality)
        return result


class ReadAheadTCPTransport(TCPTransport):  # type: ignore[misc]  # py-amqp is untyped
    """py-amqp reads each frame with three ``recv`` calls of the exact sizes (header,
    payload, end byte): nine system calls for a delivered message, three for a
    publisher confirm. This one asks for whatever the socket holds, up to
    READ_AHEAD_BYTES, and serves the next reads from that buffer by offset.

    Frames are parsed by py-amqp as before. Its timeout handling reads
    ``_read_buffer`` (the unread bytes) to put a partial frame back in front of it;
    the property keeps that working. Nothing waits unseen in the buffer: kombu's
    event-loop reader drains the connection until a read would block.
    """

    READ_AHEAD_BYTES = 64 * 1024
    _buf: bytes
    _pos: int

    @property
    def _read_buffer(self) -> bytes:
        return self._buf[self._pos:]

    @_read_buffer.setter
    def _read_buffer(self, value: bytes | bytearray) -> None:
        self._buf, self._pos = bytes(value), 0

    def _read(self, n: int, initial: bool = False,
              _errnos: tuple[int, ...] = (errno.EAGAIN, errno.EINTR)) -> bytes:
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= n:
            self._pos = pos + n
            return buf[pos:pos + n]
        buf, recv = buf[pos:], self._quick_recv
        try:
            while len(buf) < n:
                try:
                    chunk = recv(max(n - len(buf), self.READ_AHEAD_BYTES))
                except OSError as exc:
                    if exc.errno in _errnos:
                        if initial and self.raise_on_initial_eintr:
                            raise socket.timeout() from None
                        continue
                    raise
                if not chunk:
                    raise OSError("Server unexpectedly closed connection")
                buf += chunk
        except BaseException:
            self._buf, self._pos = buf, 0
            raise
        self._buf, self._pos = buf, n
        return buf[:n]


class Connection(pyamqp.Connection):  # type: ignore[misc]  # kombu is read as Any
    """kombu's py-amqp connection with the guarded `Channel`, reading ahead on plain TCP."""

    Channel = Channel

    def Transport(self, host: str, connect_timeout: float | None, ssl: Any = False,
                  read_timeout: float | None = None, write_timeout: float | None = None,
                  socket_settings: Any = None, **kwargs: Any) -> Any:
        """py-amqp's socket transport: `ReadAheadTCPTransport` unless over TLS."""
        options = dict(read_timeout=read_timeout, write_timeout=write_timeout,
                       socket_settings=socket_settings, **kwargs)
        if ssl:
            return super().Transport(host, connect_timeout, ssl, **options)
        return ReadAheadTCPTransport(host, connect_timeout=connect_timeout, **options)


class Transport(pyamqp.Transport):  # type: ignore[misc]  # kombu is read as Any
    """The kombu transport `celery_floodgate.install` sets for ``amqp://`` brokers."""

    Connection = Connection
