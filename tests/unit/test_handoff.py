"""The handoff's fence, on the unit suite's SQLite database (tasks/handoff.py), and its
awaited twin (tasks/demo/handoff_async.py, through aiosqlite)."""
import asyncio
import time
import uuid

import pytest
from sqlalchemy.exc import IntegrityError

from tasks.demo import jobs
from tasks.demo import handoff_async
from tasks.demo.db import async_url, close_async_engine, engine
from tasks.demo.errors import StoreFailed
from tasks.demo.handoff import admit, committed_job, store
from tasks.demo.timeline import create_user, user_id


@pytest.fixture(scope="module")
def author_id():
    with engine().begin() as conn:
        create_user(conn, "handoff-author")
        return user_id(conn, "handoff-author")


def test_a_fence_wins_over_a_later_commit_which_then_fails():
    job_id = str(uuid.uuid4())
    with engine().begin() as conn:
        assert jobs.fence(conn, job_id, "fanout") is True
    with pytest.raises(IntegrityError), engine().begin() as conn:
        jobs.create_job(conn, job_id, "fanout")


def test_a_commit_wins_over_a_later_fence_which_changes_nothing():
    job_id = str(uuid.uuid4())
    with engine().begin() as conn:
        jobs.create_job(conn, job_id, "fanout")
    with engine().begin() as conn:
        assert jobs.fence(conn, job_id, "fanout") is False
        assert jobs.find(conn, job_id).state == jobs.QUEUED


def test_the_worker_gets_a_committed_job_at_once():
    job_id = str(uuid.uuid4())
    with engine().begin() as conn:
        jobs.create_job(conn, job_id, "fanout")
    started = time.monotonic()
    assert committed_job(job_id, "fanout", grace_s=5).id == job_id
    assert time.monotonic() - started < 1


def test_the_worker_fences_a_job_never_committed_after_the_grace():
    job_id = str(uuid.uuid4())
    started = time.monotonic()
    assert committed_job(job_id, "fanout", grace_s=0.2) is None
    assert 0.2 <= time.monotonic() - started < 2
    with engine().connect() as conn:
        assert jobs.find(conn, job_id).state == jobs.ABANDONED
        with pytest.raises(jobs.JobNotFound):
            jobs.get_job(conn, job_id)  # to users an abandoned job was never issued


def awaited(step, *args):
    """Run one async step on a loop of its own, then close that loop's engine."""
    async def run():
        try:
            return await step(*args)
        finally:
            await close_async_engine()

    return asyncio.run(run())


STEPS = {"threads": (admit, store), "async": (
    lambda: awaited(handoff_async.admit), lambda *a: awaited(handoff_async.store, *a))}


@pytest.mark.parametrize("path", STEPS)
def test_an_admitted_post_is_stored_with_its_job(author_id, path):
    admit_, store_ = STEPS[path]
    accepted = store_(author_id, "hello", admit_())  # the two steps POST /posts takes
    with engine().connect() as conn:
        job = jobs.get_job(conn, accepted["job_id"])
    assert job.post_id == accepted["post_id"] and job.state == jobs.QUEUED


@pytest.mark.parametrize("path", STEPS)
def test_a_store_that_loses_to_a_fence_keeps_nothing_and_says_so(author_id, path):
    job_id = str(uuid.uuid4())
    with engine().begin() as conn:
        jobs.fence(conn, job_id, "fanout")  # a worker gave up waiting for the commit
        posts_before = conn.exec_driver_sql("SELECT count(*) FROM posts").scalar()
    with pytest.raises(StoreFailed) as failed:
        STEPS[path][1](author_id, "too late", job_id)
    assert "nothing was kept" in str(failed.value) and failed.value.job_id == job_id
    with engine().connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM posts").scalar() == posts_before


@pytest.mark.parametrize("path", STEPS)
def test_a_store_whose_commit_went_through_answers_the_stored_post(author_id, path):
    """The store's answer was lost (here: it is run twice): the second finds the first."""
    store_ = STEPS[path][1]
    job_id = str(uuid.uuid4())
    first = store_(author_id, "once", job_id)
    assert store_(author_id, "once", job_id) == first


@pytest.mark.parametrize("url, expected", [
    ("postgresql+psycopg://app:pw@db:5432/floodgate", "postgresql+asyncpg://app:pw@db:5432/floodgate"),
    ("postgresql://app@db/floodgate?sslmode=require", "postgresql+asyncpg://app@db/floodgate?ssl=require"),
    ("sqlite:////data/floodgate.db", "sqlite+aiosqlite:////data/floodgate.db"),
])
def test_the_async_engine_uses_the_databases_asyncio_driver(url, expected):
    assert async_url(url) == expected


def test_a_database_without_an_asyncio_driver_is_named_with_the_way_out():
    with pytest.raises(ValueError, match="API_SUBMIT_PATH=threads"):
        async_url("mysql://app@db/floodgate")


def test_a_failed_store_says_whether_anything_could_be_kept():
    fenced = StoreFailed("j-1", "OperationalError: database is locked")
    assert "nothing was kept" in str(fenced) and fenced.retry_after_s == 5
    assert "OperationalError" not in str(fenced) and fenced.cause.startswith("Operational")
    unknown = StoreFailed("j-1", "OperationalError: gone", fenced=False)
    assert "GET /jobs/j-1" in str(unknown)
    assert StoreFailed(*fenced.args).message == fenced.message  # rebuildable from its args
