"""RabbitMQ transport that turns a reject-publish nack into QueueFull.

The queue's ``x-max-length`` with ``x-overflow: reject-publish`` (declared by
:func:`tasks.backpressure.install`) makes RabbitMQ itself refuse the message
past the limit, atomically for every publisher; publisher confirms carry that
refusal back. A lost connection stays a connection error: only a nack means full.
"""
from __future__ import annotations

import socket
import time

from amqp.exceptions import MessageNacked
from kombu.transport import pyamqp

from tasks.backpressure.errors import BrokerUnavailable
from tasks.backpressure.transports import guard_of
from tasks.backpressure.transports.redis import SENT_AT_HEADER


class Channel(pyamqp.Channel):
    def basic_publish_confirm(self, *args, **kwargs):
        routing_key = kwargs.get("routing_key", args[2] if len(args) > 2 else "")
        guard = guard_of(self.connection.client)
        limit = guard.limit_for(routing_key) if guard else None
        if limit is None:
            return super().basic_publish_confirm(*args, **kwargs)
        if args:
            headers = args[0].properties.setdefault("application_headers", {})
            guard.check_eta(routing_key, headers.get("eta"))
            headers.setdefault(SENT_AT_HEADER, time.time())
        # A blocked broker (memory or disk alarm) never confirms: time out instead of hanging.
        if not kwargs.get("confirm_timeout"):
            kwargs["confirm_timeout"] = guard.publish_timeout_s
        try:
            result = super().basic_publish_confirm(*args, **kwargs)
        except MessageNacked:
            bound = guard.length_bound(limit)
            raise guard.refuse(routing_key, bound, bound) from None
        except socket.timeout:
            # A blocked broker (memory alarm) reads nothing, so a polite close would
            # hang too: drop the socket and report the broker unavailable.
            self.connection.collect()
            raise BrokerUnavailable(routing_key, "the broker did not confirm in time") from None
        guard.admitted(routing_key)
        return result


class Connection(pyamqp.Connection):
    Channel = Channel


class Transport(pyamqp.Transport):
    Connection = Connection
