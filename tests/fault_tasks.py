"""Tasks that misbehave on purpose, loaded by test workers with ``-I tests.fault_tasks``.

Each records its attempts and its effect in Redis (the test's results database),
the effect behind an idempotency key, so a test can tell "ran twice" from
"took effect twice".
"""
from __future__ import annotations

import os
import signal
import time

import redis
from celery.exceptions import SoftTimeLimitExceeded

from config import app
from tasks.demo.fanout import JobTask

_redis = None


def store() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["FAULTS_STORE_URL"])
    return _redis


def attempt(key: str) -> int:
    return store().incr(f"fgtest:attempts:{key}")


def effect_once(key: str, task_id: str) -> None:
    if store().set(f"fgtest:effect:{key}", task_id, nx=True):
        store().incr(f"fgtest:effects:{key}")


@app.task(bind=True, name="tests.fault_tasks.slow_effect", acks_late=True)
def slow_effect(self, key: str, seconds: float) -> str:
    attempt(key)
    time.sleep(seconds)
    effect_once(key, self.request.id)
    return key


@app.task(name="tests.fault_tasks.kill_own_child", acks_late=True)
def kill_own_child(key: str) -> None:
    attempt(key)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="tests.fault_tasks.kill_whole_worker", acks_late=True)
def kill_whole_worker(key: str) -> None:
    attempt(key)
    os.killpg(os.getpgid(0), signal.SIGKILL)


@app.task(bind=True, base=JobTask, name="tests.fault_tasks.always_fails",
          autoretry_for=(RuntimeError,), max_retries=3, retry_backoff=1, retry_backoff_max=2)
def always_fails(self, job_id: str) -> None:
    store().rpush(f"fgtest:attempt_times:{job_id}", time.time())
    raise RuntimeError("database password=hunter2 rejected at /srv/secret/path")


@app.task(name="tests.fault_tasks.overstays", acks_late=True, soft_time_limit=1, time_limit=2)
def overstays(key: str) -> None:
    attempt(key)
    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        store().set(f"fgtest:cleanup:{key}", 1)
        time.sleep(10)  # ignores the soft limit; the hard limit must end it


@app.task(name="tests.fault_tasks.holds_gil", acks_late=True, soft_time_limit=1, time_limit=2)
def holds_gil(key: str) -> None:
    attempt(key)
    sum(range(10**13))  # C code that holds the GIL and never checks for signals


@app.task(bind=True, name="tests.fault_tasks.timed", acks_late=True)
def timed(self, key: str, seconds: float) -> None:
    """Record when this message was published and when it started ("sent started")."""
    sent_at = getattr(self.request, "fg_sent_at", None) or (self.request.headers or {}).get("fg_sent_at")
    store().rpush(f"fgtest:waits:{key}", f"{float(sent_at)} {time.time()}")
    time.sleep(seconds)


# --- Celery's own semantics (tests/integration/test_celery_semantics.py) ---------------


@app.task(bind=True, name="tests.fault_tasks.record")
def record(self, key: str, value=None):
    """Append (task id, value) to a list per key: how many times it ran, and as what."""
    store().rpush(f"fgtest:runs:{key}", f"{self.request.id}:{value}")
    return value


@app.task(bind=True, name="tests.fault_tasks.collect")
def collect(self, results, key: str):
    """A chord body: record each run with the header's results."""
    store().rpush(f"fgtest:runs:{key}", f"{self.request.id}:{sorted(results)}")
    return sorted(results)


@app.task(bind=True, name="tests.fault_tasks.retry_then_succeed", max_retries=5)
def retry_then_succeed(self, key: str, failures: int, countdown: float = 0.2):
    """Fail ``failures`` times (self.retry with a countdown), then succeed."""
    runs = store().rpush(f"fgtest:runs:{key}", f"{self.request.id}:{self.request.retries}")
    if runs <= failures:
        raise self.retry(countdown=countdown)
    return runs


# --- Redis batch consumption (tests/integration/test_redis_batch.py) -------------------


@app.task(name="tests.fault_tasks.nothing", ignore_result=True)
def nothing() -> None:
    """No Redis call of its own: the broker's commands per task are all the worker's."""


@app.task(bind=True, name="tests.fault_tasks.retry_into")
def retry_into(self, key: str, queue: str):
    """Retry once, into ``queue`` (which a test has filled to its limit)."""
    store().rpush(f"fgtest:runs:{key}", f"{self.request.id}:{self.request.retries}")
    if self.request.retries == 0:
        raise self.retry(countdown=0.1, queue=queue)
    return "retried"
