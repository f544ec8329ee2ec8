"""A guard lives as long as its app: installed and dropped apps are freed, with their
receivers and threads; the submit-count flush thread starts at install()."""
from __future__ import annotations

import gc
import os
import threading
import weakref
from typing import Any

import pytest
from celery import Celery
from celery.signals import task_received, worker_ready

from celery_floodgate import guard_for, install, recent_counts, submits
from celery_floodgate.guard import Guard
from conftest import broker_kind, broker_url, meter_url, wait_for


def installed_app(name: str, key_prefix: str | None = None) -> tuple[Celery, Guard]:
    app = Celery(name, broker=broker_url(), backend=meter_url(), set_as_current=False)
    app.conf.task_routes = {"work": {"queue": "lifetime"}}
    guard = install(app, {"lifetime": 10, "celery": 10}, meter_url(), key_prefix=key_prefix)
    return app, guard


def live_receivers(signal: Any) -> int:
    return sum(1 for _, receiver in signal.receivers
               if not (isinstance(receiver, weakref.ReferenceType) and receiver() is None))


def flush_threads(key_prefix: str) -> list[threading.Thread]:
    name = f"{submits.THREAD_NAME}:{key_prefix}"
    return [t for t in threading.enumerate() if t.name == name]


def test_installed_apps_that_are_dropped_are_freed_with_their_guards() -> None:
    gc.collect()
    receivers_before = live_receivers(task_received), live_receivers(worker_ready)
    refs = []
    for i in range(50):
        app, guard = installed_app(f"dropped-{i}")
        refs.append((weakref.ref(app), weakref.ref(guard), guard.id))
        del app, guard
    gc.collect()
    assert [i for i, (app, _, _) in enumerate(refs) if app() is not None] == []
    assert [i for i, (_, guard, _) in enumerate(refs) if guard() is not None] == []
    assert all(Guard.registered(guard_id) is None for _, _, guard_id in refs)
    assert (live_receivers(task_received), live_receivers(worker_ready)) == receivers_before

    app, guard = installed_app("after-the-drop")
    assert guard_for(app) is guard
    assert live_receivers(task_received) == receivers_before[0] + 1


def test_an_app_that_published_is_freed_and_its_flush_thread_ends(project: Any) -> None:
    """A publish connects, pools a producer and counts the submission: none of it keeps
    the app, and its flush thread ends once the app is gone."""
    prefix = "lifetime-published"
    app, guard = installed_app("published", key_prefix=prefix)
    app.send_task("work", (1,))
    assert len(flush_threads(prefix)) == 1
    app_ref, guard_ref = weakref.ref(app), weakref.ref(guard)
    app.close()
    del app, guard
    gc.collect()
    assert app_ref() is None and guard_ref() is None
    wait_for(lambda: not flush_threads(prefix), timeout_s=10)


def test_the_flush_thread_starts_at_install_before_any_publish() -> None:
    prefix = "lifetime-install"
    assert flush_threads(prefix) == []
    app, guard = installed_app("eager", key_prefix=prefix)
    threads = flush_threads(prefix)
    assert len(threads) == 1 and threads[0].daemon
    guard.admitted("lifetime")  # the first submission starts no second thread
    assert flush_threads(prefix) == threads


def test_a_forked_child_starts_its_own_flush_thread_on_first_use() -> None:
    prefix = "lifetime-fork"
    app, guard = installed_app("forked", key_prefix=prefix)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no thread crosses a fork; the first submission starts one
        try:
            before = len(flush_threads(prefix))
            guard.admitted("lifetime")
            os.write(write_end, f"{before},{len(flush_threads(prefix))}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        seen = reader.read()
    os.waitpid(pid, 0)
    assert seen == "0,1"
    assert len(flush_threads(prefix)) == 1  # the parent's own, still running


def test_an_app_configured_after_install_flushes_its_counts_into_the_broker_it_gets() -> None:
    """A bare app has no meter at install(); once configured with a Redis broker, the meter
    follows the broker, and its submissions are counted there (recent_counts)."""
    if broker_kind() != "redis":
        pytest.skip("the meter follows the broker only on Redis")
    prefix = "lifetime-late"
    app = Celery("late", set_as_current=False)
    guard = install(app, {"lifetime": 10, "celery": 10}, key_prefix=prefix)
    app.config_from_object({"broker_url": broker_url(),
                            "task_routes": {"work": {"queue": "lifetime"}}})
    app.send_task("work", (1,))
    assert guard.meter.url
    wait_for(lambda: recent_counts(app).get("lifetime", {}).get("accepted") == 1, timeout_s=10)
    assert len(flush_threads(prefix)) == 1
    app.close()
