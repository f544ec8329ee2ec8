"""A worker subprocess on the 'faults' namespace, loading tests.fault_tasks."""
from __future__ import annotations

import os

import redis
from celery import Celery

from tests import processes, support
from tests.integration.helpers import wait_for as wait_until


def faults_env(**extra) -> dict[str, str]:
    env = {
        **os.environ,
        "BROKER_URL": support.broker_url("faults"),
        "RESULT_BACKEND": support.results_url(),
        "FAULTS_STORE_URL": support.results_url(),
        "PYTHONPATH": str(processes.ROOT),
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def faults_app() -> Celery:
    from config.celery_app import bound_queues

    app = Celery("floodgate-faults", set_as_current=False)
    app.config_from_object("config.celeryconfig")
    app.conf.broker_url = support.broker_url("faults")
    bound_queues(app)
    return app


def start(log_dir, name="worker", queues="default", pool=None, concurrency=1,
          prefetch: int | None = 1, **env) -> processes.Part:
    """``pool=None``: Floodgate's default pool; ``prefetch=None``: the queues' own."""
    extra = ("-I", "tests.fault_tasks")
    if prefetch is not None:
        extra += ("--prefetch-multiplier", str(prefetch))
    part = processes.worker(faults_env(**env), log_dir, name=name, queues=queues, pool=pool,
                            concurrency=concurrency, extra=extra)
    wait_until(lambda: "ready." in part.output(), 30, f"{name} never became ready")
    return part


def store() -> redis.Redis:
    return redis.Redis.from_url(support.results_url())


def counter(kind: str, key: str) -> int:
    return int(store().get(f"fgtest:{kind}:{key}") or 0)


def supervise_until_failed(log_dir, result, timeout_s: float = 30, between=None,
                           on_failure=None, **start_options) -> None:
    """Act as the supervisor that restarts a worker its task kills: start a worker, wait
    until it died or ``result`` failed, stop it; up to three times. ``between`` runs
    after each death, ``on_failure`` while the worker that failed it still runs."""
    for n in range(1, 4):
        worker = start(log_dir, name=f"w{n}", **start_options)
        try:
            wait_until(lambda: worker.proc.poll() is not None or result.state == "FAILURE",
                       timeout_s, "neither died nor failed")
            if result.state == "FAILURE" and on_failure is not None:
                on_failure()
        finally:
            worker.stop()
        if result.state == "FAILURE":
            return
        if between is not None:
            between()
