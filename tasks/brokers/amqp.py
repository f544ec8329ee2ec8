"""RabbitMQ transport that turns a reject-publish nack into QueueFull.

The queue's ``x-max-length`` with ``x-overflow: reject-publish`` (declared in
:mod:`config.celeryconfig`) makes RabbitMQ itself refuse the message past the
limit, atomically for every publisher; publisher confirms carry that refusal
back. A lost connection stays a connection error: only a nack means full.
"""
from __future__ import annotations

import socket

from amqp.exceptions import MessageNacked
from kombu.transport import pyamqp

from config.settings import get_settings
from tasks import guard
from tasks.errors import BrokerUnavailable


class Channel(pyamqp.Channel):
    def basic_publish_confirm(self, *args, **kwargs):
        routing_key = kwargs.get("routing_key", args[2] if len(args) > 2 else "")
        if guard.limit_for(routing_key) is not None and args:
            guard.check_eta(routing_key, (args[0].properties.get("application_headers") or {}).get("eta"))
        # A blocked broker (memory or disk alarm) never confirms: time out instead of hanging.
        if not kwargs.get("confirm_timeout"):
            kwargs["confirm_timeout"] = get_settings().publish_timeout_s
        try:
            result = super().basic_publish_confirm(*args, **kwargs)
        except MessageNacked:
            limit = guard.limit_for(routing_key)
            if limit is None:
                raise
            bound = guard.length_bound(limit)
            raise guard.refuse(routing_key, bound, bound) from None
        except socket.timeout:
            # A blocked broker (memory alarm) reads nothing, so a polite close would
            # hang too: drop the socket and report the broker unavailable.
            self.connection.collect()
            raise BrokerUnavailable(routing_key, "the broker did not confirm in time") from None
        if guard.limit_for(routing_key) is not None:
            guard.admitted(routing_key)
        return result


class Connection(pyamqp.Connection):
    Channel = Channel


class Transport(pyamqp.Transport):
    Connection = Connection
