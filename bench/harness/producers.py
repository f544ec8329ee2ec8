"""A small pool of long-lived producers for bench submitters.

Celery's ``send_task`` without ``producer=`` takes a producer from kombu's
pool, and kombu replaces the pooled connection whenever *any* exception leaves
that block - QueueFull included - so each refusal reconnects and re-declares
(~10 ms instead of ~1 ms; see RESULTS.md, experiment a). Submitters here pass
their own producer, which kombu leaves alone, so offered load is not limited
by that reconnect cost.
"""
from __future__ import annotations

import queue
from contextlib import contextmanager


class Producers:
    def __init__(self, app, size: int = 8) -> None:
        self.app = app
        self._free: queue.Queue = queue.Queue()
        self._all = []
        for _ in range(size):
            conn = app.connection_for_write()
            producer = app.amqp.Producer(conn, auto_declare=True)
            self._all.append((conn, producer))
            self._free.put(producer)

    @contextmanager
    def get(self):
        producer = self._free.get()
        try:
            yield producer
        finally:
            self._free.put(producer)

    def send(self, name: str, args: tuple, queue_name: str) -> str:
        """``send_task`` with one of our producers; returns the task id."""
        with self.get() as producer:
            return self.app.send_task(name, args=args, queue=queue_name, ignore_result=True,
                                      producer=producer).id

    def close(self) -> None:
        for conn, _ in self._all:
            conn.release()
