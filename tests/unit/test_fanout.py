"""Fan-out logic run directly (no broker): chunking, idempotency, progress."""
import uuid

import pytest
from tasks.demo import jobs
from tasks.demo.db import engine
from tasks.demo.fanout import deliver_chunk, fanout_post
from tasks.demo.timeline import (
    count_timeline_entries, create_post, create_user, follow, follower_ids, post_row,
)


@pytest.fixture
def author_with_followers():
    tag = uuid.uuid4().hex[:8]
    with engine().begin() as conn:
        author_id = create_user(conn, f"author-{tag}")
        for i in range(5):
            follow(conn, create_user(conn, f"f{i}-{tag}"), author_id, max_follows=10)
        post = create_post(conn, f"author-{tag}", "hello #fans")
        job_id = str(uuid.uuid4())
        jobs.create_job(conn, job_id, "fanout", post["post_id"])
    return job_id, post["post_id"]


def job(job_id):
    with engine().connect() as conn:
        return jobs.get_job(conn, job_id), jobs.chunks_done(conn, job_id)


def test_a_small_following_is_delivered_in_one_chunk(author_with_followers):
    job_id, post_id = author_with_followers
    assert fanout_post.run(job_id, post_id) == {"followers": 5, "chunks": 1}
    row, done = job(job_id)
    assert row.state == "succeeded" and done == 1
    with engine().connect() as conn:
        assert count_timeline_entries(conn, post_id) == 6  # five followers and the author


def test_redelivered_chunks_change_nothing_and_count_once(author_with_followers):
    job_id, post_id = author_with_followers
    with engine().begin() as conn:
        jobs.start(conn, job_id, 2)
        followers = follower_ids(conn, post_row(conn, post_id).author_id)
    first, second = followers[:3], followers[3:]
    assert deliver_chunk.run(job_id, post_id, 0, first) == 3
    assert deliver_chunk.run(job_id, post_id, 0, first) == 0  # the duplicate inserts nothing
    assert job(job_id)[0].state == "running" and job(job_id)[1] == 1
    deliver_chunk.run(job_id, post_id, 1, second)
    row, done = job(job_id)
    assert row.state == "succeeded" and done == 2
    with engine().connect() as conn:
        assert count_timeline_entries(conn, post_id) == 6


def test_a_finished_job_is_not_restarted(author_with_followers):
    job_id, post_id = author_with_followers
    fanout_post.run(job_id, post_id)
    assert fanout_post.run(job_id, post_id) == {"skipped": "job already finished"}


def test_chunks_are_submitted_as_the_posts_tenant_and_class(author_with_followers, monkeypatch):
    """The chunks count against the author's share and class, as the post did."""
    from celery_floodgate.fairness import identify
    from config.settings import get_settings
    from tasks.demo import fanout

    job_id, post_id = author_with_followers
    seen = []
    monkeypatch.setattr(fanout, "_send_chunks", lambda *args: seen.append(identify({})))
    monkeypatch.setenv("FANOUT_CHUNK_SIZE", "2")
    get_settings.cache_clear()
    fanout_post.push_request(tenant="acme", criticality="sheddable")
    try:
        assert fanout_post.run(job_id, post_id) == {"followers": 5, "chunks": 3}
    finally:
        fanout_post.pop_request()
        monkeypatch.undo()
        get_settings.cache_clear()
    assert seen == [("acme", "sheddable")]
