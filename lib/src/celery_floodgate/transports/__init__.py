"""Guarded kombu transports: the one place every publish meets its queue's limit.

* Redis (`.redis`): ``admit.lua`` counts the queue (with its priority
  sub-lists) and pushes, atomically, so the limit is exact under any number of
  concurrent submitters and costs no extra round trip.
* RabbitMQ (`.amqp`): the broker's own ``x-max-length`` with
  ``x-overflow: reject-publish`` and publisher confirms; a nack becomes QueueFull.

`celery_floodgate.install` sets them as the app's ``broker_transport``;
a channel finds its app's guard through the connection's transport options.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from celery_floodgate.transports.urls import SCHEMES

if TYPE_CHECKING:
    from celery_floodgate.guard import Guard

#: The transport option that names the guard of the app a connection belongs to.
GUARD_OPTION = "floodgate_guard"
__all__ = ["GUARD_OPTION", "SCHEMES", "LuaScript", "broker_id", "guard_of", "uri_of"]


def uri_of(connection: Any, include_password: bool = False) -> str:
    """The connection's URL as kombu would write it for its own transport (redis://, amqp://)."""
    uri = str(connection.as_uri(include_password=include_password))
    scheme = SCHEMES.get(connection.transport_cls)
    return uri.replace(f"{connection.transport_cls}://", f"{scheme}://", 1) if scheme else uri


def broker_id(connection: Any) -> str:
    """Which broker a connection talks to (password masked): prefetch windows are per broker."""
    return uri_of(connection)


class LuaScript:
    """A script kept in ``.lua`` files beside this module, run by its SHA (EVALSHA).

    Several names are joined in order: ``LuaScript("line.lua", "admit.lua")`` runs
    admit.lua with line.lua's function defined first.
    """

    def __init__(self, *names: str) -> None:
        folder = resources.files(__package__)
        self.text = "\n".join(folder.joinpath(name).read_text() for name in names)
        self.sha = hashlib.sha1(self.text.encode()).hexdigest()

    def __call__(self, client: Any, keys: list[str], args: tuple[Any, ...]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.text, len(keys), *keys, *args)


def guard_of(holder: Any) -> Guard | None:
    """The guard installed on the app a kombu connection (or an app's conf) belongs to."""
    from celery_floodgate.guard import Guard

    options = (getattr(holder, "transport_options", None)
               or getattr(holder, "broker_transport_options", None) or {})
    return Guard.registered(options.get(GUARD_OPTION))
