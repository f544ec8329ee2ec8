"""Publish first, then store (tasks/handoff.py): a refusal does no database work,
a 503 leaves nothing behind, and a 202's job runs, across the crash window."""
import contextlib
import logging
import threading
import time
import uuid

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import IntegrityError

from tasks.demo import jobs
from tasks.demo.db import engine
from tasks.demo.handoff import FANOUT_TASK
from tasks.demo.models import posts, timeline_entries
from tests.integration.helpers import (
    count,
    make_following,
    post_as,
    read_job,
    timeline_of,
    wait_for,
)
from tests.integration.test_back_pressure import LIMIT, depth, fill

GRACE_S = 2  # COMMIT_GRACE_S in conftest


@contextlib.contextmanager
def statements_seen():
    """Every statement any engine of this process runs (the blocking one and each event
    loop's asyncio one)."""
    seen: list[str] = []
    listener = lambda conn, cursor, statement, *a: seen.append(statement)  # noqa: E731
    event.listen(Engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", listener)


@contextlib.contextmanager
def tables_locked():
    """Hold every table a post writes, as a long transaction of another client would."""
    with engine().connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("BEGIN"))
            conn.execute(text("LOCK TABLE posts, timeline_entries, jobs IN ACCESS EXCLUSIVE MODE"))
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite's one write lock
        try:
            yield
        finally:
            conn.rollback()


def test_a_refusal_does_no_database_work_and_needs_no_lock(api, idle_app, monkeypatch,
                                                           submit_path):
    import tasks.demo.submit

    author, _ = make_following(api, followers=1)
    assert post_as(api, author, "first").status_code == 202
    monkeypatch.setattr(tasks.demo.submit, "app", idle_app)  # a broker no worker drains
    fill(idle_app, LIMIT)
    before = count(posts), count(timeline_entries)
    # The key was just checked, so the refusal below finds it in this process's cache
    # (AUTH_CACHE_S) and makes no query for it either.
    assert api.get("/users/me", headers=author.headers).status_code == 200

    with tables_locked(), statements_seen() as seen:
        started = time.monotonic()
        response = post_as(api, author, "refused")
        took_s = time.monotonic() - started

    assert response.status_code == 503 and "is full" in response.json()["detail"]
    assert seen == []  # not even a read
    assert took_s < 1, f"the refusal waited {took_s:.2f} s for a lock"
    assert (count(posts), count(timeline_entries)) == before
    assert depth(idle_app) == LIMIT


def test_a_job_published_but_never_committed_is_fenced_and_a_late_commit_fails(api):
    """The crash window: the broker accepted, then the API died before its commit."""
    from tasks.demo.handoff import store_post_and_job
    from tasks.demo.submit import submit
    from tasks.demo.timeline import user_id

    author, fans = make_following(api, followers=2)
    job_id = str(uuid.uuid4())
    submit(FANOUT_TASK, args=(job_id,), task_id=job_id)  # ... and no commit follows

    # Only a worker can have fenced it: the API never ran for this job.
    wait_for(lambda: _state(job_id) == jobs.ABANDONED, GRACE_S + 15, "the job was never fenced")

    posts_before = count(posts), count(timeline_entries)
    with engine().connect() as conn:
        author_id = user_id(conn, author.name)
    with pytest.raises(IntegrityError):  # the API's store, too late
        store_post_and_job(author_id, "too late", job_id)
    assert (count(posts), count(timeline_entries)) == posts_before  # no half-written post
    assert api.get(f"/jobs/{job_id}", headers=author.headers).status_code == 404
    assert timeline_of(api, author) == []
    assert all(timeline_of(api, f) == [] for f in fans)


def test_a_commit_slower_than_the_worker_still_runs_its_job(api):
    """The worker took the message before the API committed: it waits for the commit."""
    from tasks.demo.submit import submit
    from tasks.demo.timeline import create_post

    author, fans = make_following(api, followers=3)
    job_id = str(uuid.uuid4())
    submit(FANOUT_TASK, args=(job_id,), task_id=job_id)
    time.sleep(GRACE_S / 4)  # the worker has the message by now and finds no job
    with engine().begin() as conn:
        post = create_post(conn, author.name, "slow commit")
        jobs.create_job(conn, job_id, "fanout", post["post_id"])

    wait_for(lambda: read_job(api, author, f"/jobs/{job_id}")["state"] == "succeeded")
    for fan in fans:
        assert [p["post_id"] for p in timeline_of(api, fan)] == [post["post_id"]]


@pytest.fixture
def failing_post_insert():
    """A real database failure after admission: inserting this text raises in the database."""
    trigger = "floodgate_test_explode"
    with engine().begin() as conn:
        # One left by an interrupted run (or the other submit path's) is replaced, not an error.
        on = " ON posts" if conn.dialect.name == "postgresql" else ""
        conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger}{on}"))
        if conn.dialect.name == "postgresql":
            conn.execute(text(
                f"CREATE OR REPLACE FUNCTION {trigger}() RETURNS trigger AS $$ BEGIN "
                "IF NEW.text = 'explode' THEN RAISE EXCEPTION 'injected failure'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text(f"CREATE TRIGGER {trigger} BEFORE INSERT ON posts "
                              f"FOR EACH ROW EXECUTE FUNCTION {trigger}()"))
        else:
            conn.execute(text(f"CREATE TRIGGER {trigger} BEFORE INSERT ON posts "
                              "WHEN NEW.text = 'explode' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"))
    yield "explode"
    with engine().begin() as conn:
        on = " ON posts" if conn.dialect.name == "postgresql" else ""
        conn.execute(text(f"DROP TRIGGER {trigger}{on}"))


def test_a_database_failure_after_admission_answers_503_and_keeps_nothing(
        api, failing_post_insert, caplog, submit_path):
    caplog.set_level(logging.WARNING, logger="tasks.demo.fanout")
    author, fans = make_following(api, followers=2)
    before = count(posts), count(timeline_entries)

    response = post_as(api, author, failing_post_insert)

    assert response.status_code == 503, response.text
    body = response.json()
    assert "nothing was kept" in body["detail"] and int(response.headers["Retry-After"]) >= 1
    assert (count(posts), count(timeline_entries)) == before
    assert api.get(f"/jobs/{body['job_id']}", headers=author.headers).status_code == 404
    # The admitted message is skipped at once: the API fenced its id, so no grace is waited.
    skipped = f"job {body['job_id']} skipped"
    wait_for(lambda: skipped in caplog.text, GRACE_S * 0.75, "the worker did not skip it at once")


def test_many_posts_racing_their_workers_all_run(api):
    """Accepted posts, submitted while workers are idle and fast, each run exactly once."""
    author, fans = make_following(api, followers=2)
    answers: list = []

    def post(i):
        answers.append(post_as(api, author, f"race {i}"))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [202] * 20
    for a in answers:
        wait_for(lambda: read_job(api, author, a.json()["status_url"])["state"] == "succeeded")
    assert len(timeline_of(api, fans[0])) == 20


def _state(job_id: str) -> str | None:
    with engine().connect() as conn:
        row = jobs.find(conn, job_id)
    return row.state if row else None
