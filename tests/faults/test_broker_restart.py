"""FAULTS.md row 7: jobs are running when the broker restarts.

The worker must reconnect by itself (same process, no restart), and each job's
effect must happen once. Runs on this pass's broker, a private instance,
restarted cleanly with its data kept (see ``Broker.restart``).

To have jobs *running* at the moment of the restart, the test holds a write
lock on the app's database: each ``fanout_post`` has started (its worker logged
"job … taken") and waits inside the task for its first write.
"""
from __future__ import annotations

import sqlite3
import time

import psycopg

from tests.faults.harness import make_author, wait_for

FOLLOWERS, CHUNK = 3, 2  # two chunks per job: fanout_post publishes deliver_chunk messages
JOBS = 4                 # = worker concurrency, so all of them are running at once


class WriteLock:
    """The database's write lock on ``jobs``, held from construction until ``release()``:
    a fan-out that has started waits inside its task for its first write."""

    def __init__(self, db_url: str) -> None:
        if db_url.startswith("sqlite"):
            self.conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")  # SQLite's one write lock; readers (WAL) go on
        else:
            self.conn = psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"))
            self.conn.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")  # blocks writes, not reads
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.conn.rollback()
            self.conn.close()


def start_running_jobs(broker, floodgate):
    """API and a worker on the private broker; JOBS accepted fan-outs, all inside their task,
    held there by the database lock. Returns (system, worker, author, accepted, lock), where
    ``author`` is the headers that post as the author."""
    system = floodgate(broker.url, fanout_chunk_size=CHUNK)
    system.start_api()
    with system.http() as http:
        make_author(http, FOLLOWERS)  # http now posts as the author
        author = {"Authorization": http.headers["Authorization"]}
        answers = [http.post("/posts", json={"text": f"row7 #{i}"}) for i in range(JOBS)]
    assert [a.status_code for a in answers] == [202] * JOBS
    accepted = {a.json()["job_id"]: a.json()["post_id"] for a in answers}
    lock = WriteLock(system.db_url)
    try:
        worker = system.start_worker(concurrency=JOBS, pool="prefork")  # JOBS at once
        wait_for(lambda: all(f"job {j} taken" in worker.output() for j in accepted), 30,
                 "the jobs did not all start",
                 on_timeout=lambda: worker.output()[-2000:])
    except BaseException:
        lock.release()
        raise
    return system, worker, author, accepted, lock


def finish(system, worker, author, accepted) -> None:
    """Every job took effect once, and the same worker process serves new jobs."""
    system.wait_jobs(accepted, timeout_s=60)
    with system.http() as http:
        late = http.post("/posts", json={"text": "row7 after the restart"}, headers=author)
    assert late.status_code == 202, late.text
    accepted = {**accepted, late.json()["job_id"]: late.json()["post_id"]}
    # The worker may still be waiting out kombu's reconnect interval, which grows by 2 s per
    # failed try during the outage (up to 30 s); a slow machine's CI once needed over 30 s.
    system.wait_jobs(accepted, timeout_s=60)
    system.assert_effects_once(accepted, FOLLOWERS)
    assert worker.proc.poll() is None, "the worker exited instead of reconnecting"
    assert "Connection to broker lost" in worker.output() or "Cannot connect" in worker.output()


def test_row7_jobs_running_across_a_broker_restart_take_effect_once(broker, floodgate):
    system, worker, author, accepted, lock = start_running_jobs(broker, floodgate)
    try:
        broker.restart()   # the jobs are still inside their task
        time.sleep(1)
    finally:
        lock.release()     # ...and finish once the broker is back
    finish(system, worker, author, accepted)


def test_row7_jobs_that_finish_while_the_broker_is_down_still_take_effect_once(
        broker, floodgate):
    system, worker, author, accepted, lock = start_running_jobs(broker, floodgate)
    try:
        broker.stop()
        lock.release()     # the jobs finish while the broker is down
        states = system.job_states
        wait_for(lambda: all(states().get(j) in ("succeeded", "failed") for j in accepted), 30,
                 "the jobs did not finish", on_timeout=lambda: {j: states().get(j) for j in accepted})
    finally:
        lock.release()
        broker.start()
    failed = system.failures(accepted)
    if failed:
        raise AssertionError(f"{len(failed)} of {JOBS} accepted jobs were failed by the outage: "
                       f"{sorted(set(failed.values()))}")
    finish(system, worker, author, accepted)
