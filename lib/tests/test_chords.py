"""Chords keep Celery's semantics under install(): a frozen chord applied again runs its
body again (celery_floodgate.results), on either broker with a Redis result backend."""
from __future__ import annotations

import os
import uuid
from typing import Any

import celery
import pytest
import redis
from celery import Celery, chord

from celery_floodgate import install
from celery_floodgate.results import RerunnableChords
from conftest import broker_url, meter_url, wait_for

ROUNDS = int(os.environ.get("LIB_TEST_CHORD_ROUNDS", "10"))
# Five header tasks: the race is on every one before the last. Without the fix the body
# did not run again in 16 rounds of 20 on RabbitMQ, 12 of 20 on Redis (a 2-thread worker).
HEADER = (1, 2, 3, 4, 5)


def plain_app(**install_options: Any) -> Celery:
    app = Celery("chords", broker=broker_url(), set_as_current=False)
    install(app, {"celery": 100}, meter_url(), **install_options)
    return app


def test_install_gives_a_redis_result_backend_rerunnable_chords() -> None:
    app = plain_app()
    app.conf.result_backend = meter_url()  # configured after install(): still honoured
    assert isinstance(app.backend, RerunnableChords)
    assert app.backend.client.connection_pool.connection_kwargs["db"] == 8


def test_a_backend_that_exists_before_install_is_converted() -> None:
    app = Celery("chords", broker=broker_url(), backend=meter_url(), set_as_current=False)
    before = app.backend
    install(app, {"celery": 100}, meter_url())
    assert app.backend is before and isinstance(before, RerunnableChords)


def test_rerunnable_chords_false_and_other_backends_are_left_as_celery_makes_them() -> None:
    off = plain_app(rerunnable_chords=False)
    off.conf.result_backend = meter_url()
    assert not isinstance(off.backend, RerunnableChords)
    assert type(off.backend).__name__ == "RedisBackend"
    rpc = plain_app()
    rpc.conf.result_backend = "rpc://"
    assert not isinstance(rpc.backend, RerunnableChords)
    assert type(rpc.backend).__name__ == "RPCBackend"


def runs(key: str) -> list[str]:
    return [r.decode() for r in redis.Redis.from_url(meter_url()).lrange(key, 0, -1)]


@pytest.mark.skipif(
    tuple(int(n) for n in celery.__version__.split(".")[:2]) < (5, 7),
    reason="Celery before 5.7 sends a chord's body before it deletes the chord's counters "
           "(RedisBackend.on_chord_part_return), so a chord applied again at once can lose its "
           "second run to that cleanup, with or without install(); the fix is for 5.7's mark")
def test_a_frozen_chord_applied_again_runs_its_body_again(project: Any, start_worker: Any) -> None:
    """Celery forgets a finished chord's 'done' mark only just before it publishes the last
    header task; a worker that ran an earlier one first dropped its result, and the body
    never ran again. Several rounds: it is a race."""
    start_worker(queues="celery")
    tasks = project
    for _ in range(ROUNDS):
        key = uuid.uuid4().hex
        c = chord([tasks.record.s(f"{key}-header", i) for i in HEADER],
                  tasks.collect.s(key))
        c.freeze()
        first = c.apply_async()
        assert first.get(timeout=60) == list(HEADER)
        second = c.apply_async()
        assert second.id == first.id  # the same frozen body
        wait_for(lambda: len(runs(key)) >= 2, timeout_s=30)
        assert runs(key) == [repr(list(HEADER))] * 2
        assert len(runs(f"{key}-header")) == 2 * len(HEADER)
