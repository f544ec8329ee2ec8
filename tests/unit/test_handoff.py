"""The handoff's fence, on the unit suite's SQLite database (tasks/handoff.py)."""
import time
import uuid

import pytest
from sqlalchemy.exc import IntegrityError

from tasks.demo import jobs
from tasks.demo.db import engine
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


def test_an_admitted_post_is_stored_with_its_job(author_id):
    accepted = store(author_id, "hello", admit())  # the two steps POST /posts takes
    with engine().connect() as conn:
        job = jobs.get_job(conn, accepted["job_id"])
    assert job.post_id == accepted["post_id"] and job.state == jobs.QUEUED


def test_a_failed_store_says_whether_anything_could_be_kept():
    fenced = StoreFailed("j-1", "OperationalError: database is locked")
    assert "nothing was kept" in str(fenced) and fenced.retry_after_s == 5
    assert "OperationalError" not in str(fenced) and fenced.cause.startswith("Operational")
    unknown = StoreFailed("j-1", "OperationalError: gone", fenced=False)
    assert "GET /jobs/j-1" in str(unknown)
    assert StoreFailed(*fenced.args).message == fenced.message  # rebuildable from its args
