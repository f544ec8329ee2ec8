"""Pooled producers that keep their connection when a message is refused.

kombu's ``Producer.__exit__`` replaces a pooled connection on *any* exception,
so each refusal would cost a reconnect and a re-declare (15 ms on Redis, 8.5 ms
on RabbitMQ, bench/RESULTS.md (a)) just when the system is busiest. A refusal
says nothing about the connection; every other error still replaces it.
"""
from __future__ import annotations

from types import TracebackType
from typing import Any

from kombu import pools
from kombu.connection import Connection
from kombu.messaging import Producer

from celery_floodgate.errors import Refused
from celery_floodgate.transports import SCHEMES, guard_of
from celery_floodgate.transports.lean import LeanPublish


class GuardedConnection(Connection):  # type: ignore[misc]  # kombu is read as Any
    """URLs (worker banner, Flower's broker view) still read redis:// and amqp://."""

    def as_uri(self, include_password: bool = False, mask: str = "**", *args: Any,
               **kwargs: Any) -> str:
        """kombu's URL of the connection, with the scheme kombu's own transport has."""
        uri: str = super().as_uri(include_password, mask, *args, **kwargs)
        scheme = SCHEMES.get(self.transport_cls)
        return uri.replace(f"{self.transport_cls}://", f"{scheme}://", 1) if scheme else uri


class KeepsConnectionOnRefusal(Producer):  # type: ignore[misc]  # kombu is read as Any
    """A pooled producer that keeps its connection when a message was refused."""

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                 exc_tb: TracebackType | None) -> None:
        if exc_type is not None and issubclass(exc_type, Refused):
            self.release()
            return
        super().__exit__(exc_type, exc_val, exc_tb)


class GuardedAMQP(LeanPublish):
    """Mixed into the app's AMQP helper by install(): the connection and producer pool above,
    and a publish without two per-message costs (.lean)."""

    Connection = GuardedConnection
    BrokerConnection = GuardedConnection
    _producer_pool: pools.ProducerPool | None

    @property
    def producer_pool(self) -> pools.ProducerPool:
        """The app's producer pool, of `KeepsConnectionOnRefusal` producers."""
        if self._producer_pool is None:
            connections = pools.connections[self.app.connection_for_write()]
            self._producer_pool = pools.ProducerPool(
                connections, limit=self.app.pool.limit, Producer=KeepsConnectionOnRefusal)
        return self._producer_pool

    publisher_pool = producer_pool

    def Router(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's router, which also answers a remembered refusal (lib/src/celery_floodgate/memo.py)
        as soon as the queue is known: before a message is built or a connection taken."""
        router = super().Router(*args, **kwargs)
        route, guard = router.route, guard_of(self.app.conf)  # install() named it already
        if guard is None:
            return router

        def route_or_refuse(options: Any, name: str, *rest: Any, **kw: Any) -> Any:
            routed = route(options, name, *rest, **kw)
            queue = routed.get("queue")
            full = guard.recent_refusal(getattr(queue, "name", queue))
            if full is not None:
                raise full
            return routed

        router.route, router.route_unguarded = route_or_refuse, route
        return router
