"""FAULTS.md rows that kill or trap a worker subprocess (killed by its PID)."""
import signal
import uuid

import pytest

from tests import support
from tests.integration import workers
from tests.integration.workers import counter, wait_until

AMQP_ONLY = pytest.mark.skipif(support.broker_kind() != "amqp", reason="a RabbitMQ row")
REDIS_ONLY = pytest.mark.skipif(support.broker_kind() != "redis", reason="a Redis row")


def key() -> str:
    return uuid.uuid4().hex


@AMQP_ONLY
def test_row1_a_worker_killed_mid_task_on_rabbitmq_is_redelivered_and_the_effect_happens_once(
        app, tmp_path):
    k = key()
    first = workers.start(tmp_path, name="first")
    app.send_task("tests.fault_tasks.slow_effect", args=(k, 3))
    wait_until(lambda: counter("attempts", k) == 1, 20, "the task never started")
    first.kill(signal.SIGKILL)
    first.stop()
    second = workers.start(tmp_path, name="second")
    try:
        wait_until(lambda: counter("effects", k) == 1, 30, "the task was not redelivered")
        assert counter("attempts", k) == 2 and counter("effects", k) == 1
    finally:
        second.stop()


@REDIS_ONLY
def test_row2_a_worker_killed_mid_task_on_redis_is_redelivered_after_the_visibility_timeout(
        app, tmp_path):
    limits = {"TASK_SOFT_TIME_LIMIT_S": 6, "TASK_TIME_LIMIT_S": 8, "REDIS_VISIBILITY_TIMEOUT_S": 10}
    k = key()
    first = workers.start(tmp_path, name="first", **limits)
    app.send_task("tests.fault_tasks.slow_effect", args=(k, 3))
    wait_until(lambda: counter("attempts", k) == 1, 20, "the task never started")
    first.kill(signal.SIGKILL)
    first.stop()
    second = workers.start(tmp_path, name="second", **limits)
    try:
        wait_until(lambda: counter("effects", k) == 1, 40, "not redelivered after the timeout")
        assert counter("attempts", k) == 2 and counter("effects", k) == 1
    finally:
        second.stop()


def test_row3_a_task_that_kills_its_pool_child_fails_once_and_the_worker_keeps_serving(
        app, tmp_path):
    worker = workers.start(tmp_path, pool="prefork")  # Floodgate's own pool has no child
    try:
        poison, healthy = key(), key()
        result = app.send_task("tests.fault_tasks.kill_own_child", args=(poison,))
        wait_until(lambda: result.state == "FAILURE", 30, "the poison task never failed")
        assert "WorkerLostError" in repr(result.result)
        app.send_task("tests.fault_tasks.slow_effect", args=(healthy, 0))
        wait_until(lambda: counter("effects", healthy) == 1, 20, "the worker stopped serving")
        assert counter("attempts", poison) == 1  # not redelivered in the meantime
    finally:
        worker.stop()


@AMQP_ONLY
def test_row3_a_message_that_kills_the_whole_worker_every_time_is_failed_after_a_bound(
        app, tmp_path):
    poison = key()
    result = app.send_task("tests.fault_tasks.kill_whole_worker", args=(poison,))
    workers.supervise_until_failed(tmp_path, result, MAX_REDELIVERIES=1)
    assert result.state == "FAILURE" and "TooManyDeliveries" in repr(result.result)
    assert counter("attempts", poison) == 2  # the first delivery and one redelivery


def test_row14_an_unregistered_task_is_rejected_with_a_clear_log_line(app, tmp_path):
    worker = workers.start(tmp_path)
    try:
        app.send_task("no.such.task", args=(1,))
        healthy = key()
        app.send_task("tests.fault_tasks.slow_effect", args=(healthy, 0))
        wait_until(lambda: counter("effects", healthy) == 1, 20, "the worker stopped serving")
        assert "Received unregistered task of type 'no.such.task'" in worker.output()
    finally:
        worker.stop()


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_row15_a_pickle_message_is_rejected_and_never_deserialised(app, tmp_path):
    from kombu import Connection, Producer

    marker = tmp_path / "unpickled"
    worker = workers.start(tmp_path)
    try:
        with Connection(support.broker_url("faults")) as conn:
            Producer(conn).publish(
                Exploit(str(marker)), serializer="pickle", routing_key="default",
                exchange="default", headers={"task": "tests.fault_tasks.slow_effect",
                                             "id": str(uuid.uuid4()), "lang": "py"},
            )
        healthy = key()
        app.send_task("tests.fault_tasks.slow_effect", args=(healthy, 0))
        wait_until(lambda: counter("effects", healthy) == 1, 20, "the worker stopped serving")
        assert not marker.exists()
        assert "untrusted content of type pickle" in worker.output()
    finally:
        worker.stop()


def test_row16_a_task_that_raises_retries_with_backoff_then_fails_with_a_sanitised_error(
        app, tmp_path):
    from tasks.demo import jobs as job_records
    from tasks.demo.db import engine
    from tasks.demo.job_status import job_status

    job_id = str(uuid.uuid4())
    with engine().begin() as conn:
        job_records.create_job(conn, job_id, "test")
    worker = workers.start(tmp_path, DATABASE_URL=_database_url())
    try:
        app.send_task("tests.fault_tasks.always_fails", args=(job_id,), task_id=job_id)
        # The status GET /jobs/{id} serves (a job with no post has no submitter to ask).
        status = wait_until(lambda: (s := job_status(job_id))["state"] == "failed"
                            and s, 40, "the job never failed")
    finally:
        worker.stop()
    times = [float(t) for t in workers.store().lrange(f"fgtest:attempt_times:{job_id}", 0, -1)]
    assert len(times) == 4  # the first run and max_retries=3
    assert all(b > a for a, b in zip(times, times[1:]))
    assert "hunter2" not in status["error"] and "/srv" not in status["error"]
    assert "Traceback" not in status["error"] and status["error"].startswith("RuntimeError")


@pytest.mark.parametrize("pool", [None, "prefork"], ids=["floodgate-pool", "prefork"])
def test_row17_soft_limit_runs_cleanup_and_hard_limit_fails_without_redelivery(
        app, tmp_path, pool):
    worker = workers.start(tmp_path, pool=pool)
    k = key()
    try:
        result = app.send_task("tests.fault_tasks.overstays", args=(k,))
        wait_until(lambda: result.state == "FAILURE", 30, "the hard limit never fired")
        assert "TimeLimitExceeded" in repr(result.result)
        assert workers.store().get(f"fgtest:cleanup:{k}") == b"1"
        healthy = key()
        app.send_task("tests.fault_tasks.slow_effect", args=(healthy, 0))
        wait_until(lambda: counter("effects", healthy) == 1, 20, "no fresh child replaced it")
        assert counter("attempts", k) == 1
    finally:
        worker.stop()


def test_row17_a_task_holding_the_gil_past_its_hard_limit_is_ended_by_the_cpu_backstop(
        app, tmp_path):
    """Neither the soft limit's signal handler nor the watchdog thread can run while C code
    holds the GIL; Floodgate's pool then relies on a CPU-time timer's default action."""
    worker = workers.start(tmp_path)  # Floodgate's pool
    k = key()
    try:
        app.send_task("tests.fault_tasks.holds_gil", args=(k,))
        wait_until(lambda: worker.proc.poll() is not None, 60, "the backstop never ended it")
        assert worker.proc.returncode == -signal.SIGVTALRM
        assert counter("attempts", k) == 1
        assert "Hard time limit" not in worker.output()  # the watchdog never got the GIL
    finally:
        worker.stop()


def _database_url() -> str:
    import os

    return os.environ["DATABASE_URL"]


@REDIS_ONLY
def test_a_worker_warns_when_its_redis_broker_keeps_no_aof(app, tmp_path):
    worker = workers.start(tmp_path)  # the shared test Redis runs with --appendonly no
    try:
        wait_until(lambda: "runs without AOF" in worker.output(), 10, "no durability warning")
    finally:
        worker.stop()


def test_a_worker_takes_its_prefetch_from_the_queues_it_consumes_and_its_pool_from_p(
        app, tmp_path):
    from config.queues import PREFETCH

    fast = workers.start(tmp_path, name="fast", queues="fanout", prefetch=None)
    slow = workers.start(tmp_path, name="slow", queues="aggregation,fanout", prefetch=None)
    chosen = workers.start(tmp_path, name="chosen", queues="fanout", prefetch=1, pool="prefork")
    try:
        stats = app.control.inspect(timeout=3).stats() or {}
        by_name = {name.split("@")[0]: s for name, s in stats.items()}
        prefetch = {name: s["prefetch_count"] for name, s in by_name.items()}
        assert prefetch == {"fast": PREFETCH["fanout"], "slow": 1, "chosen": 1}
        pools = {name: s["pool"]["implementation"] for name, s in by_name.items()}
        assert pools["fast"] == pools["slow"] == "tasks.runtime.pool:TaskPool"
        assert "prefork" in pools["chosen"]  # an explicit -P prefork wins over worker_pool
    finally:
        for worker in (fast, slow, chosen):
            worker.stop()
