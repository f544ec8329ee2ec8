"""Batch submission (lib/src/celery_floodgate/batch.py, POST /posts:batch): one call, many jobs,
the limit honoured exactly, refusals reported per item, nothing written for them."""
import threading
from concurrent.futures import ThreadPoolExecutor

from celery.result import AsyncResult
from sqlalchemy.exc import OperationalError

from api.schemas import BATCH_MAX
from celery_floodgate import QueueFull
from celery_floodgate.batch import submit_many
from tasks.demo import jobs
from tasks.demo.db import engine
from tasks.demo.models import jobs as jobs_table
from tasks.demo.models import posts, timeline_entries
from tests.integration.helpers import User, count, make_following, read_job, timeline_of, wait_for
from tests.integration.test_back_pressure import FANOUT, LIMIT, depth, fill

NIL = "00000000-0000-0000-0000-000000000000"


def _batch(app, n: int):
    return submit_many(app, FANOUT, [(NIL, 0)] * n)


def test_concurrent_batches_honour_the_limit_exactly_and_report_each_refusal(idle_app):
    barrier = threading.Barrier(8)

    def one(_):
        barrier.wait()
        return _batch(idle_app, 60)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(8)))

    accepted = sum(len(r.accepted) for r in results)
    refused = sum(len(r.refused) for r in results)
    assert (accepted, refused) == (LIMIT, 8 * 60 - LIMIT)
    assert depth(idle_app) == LIMIT
    for r in results:
        indexes = [i for i, _ in r.refused]
        assert len(set(indexes)) == len(indexes)
        assert sorted(set(r.accepted_indexes()) | set(indexes)) == list(range(60))
        assert r.accepted == [r.ids[i] for i in r.accepted_indexes()]
        for _, full in r.refused:
            assert isinstance(full, QueueFull)
            assert (full.queue, full.limit) == ("fanout", LIMIT) and full.retry_after_s >= 1


def test_batches_and_single_submissions_share_one_exact_limit(idle_app):
    def single(_):
        try:
            idle_app.send_task(FANOUT, args=(NIL, 0))
            return 1
        except QueueFull:
            return 0

    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = [pool.submit(_batch, idle_app, 50) for _ in range(4)]
        singles = list(pool.map(single, range(150)))
        accepted = sum(singles) + sum(len(b.result().accepted) for b in batches)
    assert accepted == LIMIT
    assert depth(idle_app) == LIMIT


def test_a_batch_past_the_limit_admits_what_fits_and_refuses_the_rest_in_order(idle_app):
    fill(idle_app, LIMIT - 5)

    result = _batch(idle_app, 12)

    assert result.accepted_indexes() == [0, 1, 2, 3, 4]
    assert [i for i, _ in result.refused] == list(range(5, 12))
    assert "queue 'fanout' is full" in str(result.refused[0][1])
    assert result.retry_after_s >= 1
    assert depth(idle_app) == LIMIT
    again = _batch(idle_app, 3)
    assert again.accepted == [] and len(again.refused) == 3


def test_everything_a_batch_admits_runs(celery_session_worker, celery_session_app):
    result = submit_many(celery_session_app, "celery.ping", [()] * 30)

    assert len(result.accepted) == 30 and result.refused == []
    assert [AsyncResult(i, app=celery_session_app).get(timeout=60) for i in result.accepted] \
        == ["pong"] * 30


def _post_batch(api, author: User, n: int, text: str = "batched"):
    return api.post("/posts:batch", json={"posts": [{"text": f"{text} {i}"} for i in range(n)]},
                    headers=author.headers)


def test_a_batch_of_posts_is_accepted_and_every_job_succeeds(api):
    author, fans = make_following(api, followers=3)

    response = _post_batch(api, author, 6)

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["refused"]) == (6, 0)
    assert [r["index"] for r in body["results"]] == list(range(6))
    for item in body["results"]:
        assert item["status"] == "accepted" and item["status_url"] == f"/jobs/{item['job_id']}"
        wait_for(lambda: read_job(api, author, item["status_url"])["state"] == "succeeded",
                 timeout_s=60, message=f"job {item['job_id']} did not succeed")
    for fan in fans:
        assert len(timeline_of(api, fan, limit=50)) == 6
    assert len(timeline_of(api, author, limit=50)) == 6


def test_refused_items_leave_nothing_behind_and_the_answer_says_when_to_retry(
        api, idle_app, monkeypatch, submit_path):
    import tasks.demo.submit

    author, _ = make_following(api, followers=1)
    monkeypatch.setattr(tasks.demo.submit, "app", idle_app)  # a broker no worker drains
    fill(idle_app, LIMIT - 3)
    before = count(posts), count(timeline_entries), count(jobs_table)

    response = _post_batch(api, author, 5)

    assert response.status_code == 207, response.text
    assert int(response.headers["Retry-After"]) >= 1
    body = response.json()
    assert (body["accepted"], body["refused"]) == (3, 2)
    accepted = [r for r in body["results"] if r["status"] == "accepted"]
    refused = [r for r in body["results"] if r["status"] == "refused"]
    assert [r["index"] for r in accepted] == [0, 1, 2]
    assert [r["index"] for r in refused] == [3, 4]
    assert all(r["retry_after_s"] >= 1 and "job_id" not in r for r in refused)
    assert (count(posts), count(timeline_entries), count(jobs_table)) == (
        before[0] + 3, before[1] + 3, before[2] + 3)
    for r in accepted:
        assert read_job(api, author, r["status_url"])["state"] == "queued"
    assert depth(idle_app) == LIMIT

    all_refused = _post_batch(api, author, 4)
    assert all_refused.status_code == 503 and int(all_refused.headers["Retry-After"]) >= 1
    assert all_refused.json()["refused"] == 4
    assert (count(posts), count(timeline_entries)) == (before[0] + 3, before[1] + 3)


def test_a_failed_store_keeps_nothing_and_fences_every_admitted_job(api, idle_app, monkeypatch,
                                                                   submit_path):
    import tasks.demo.handoff
    import tasks.demo.submit

    author, _ = make_following(api, followers=1)
    monkeypatch.setattr(tasks.demo.submit, "app", idle_app)
    admitted = []

    def failing(conn, rows):
        admitted.extend(j for j, _ in rows)
        raise OperationalError("INSERT INTO jobs", {}, Exception("database went away"))

    monkeypatch.setattr(tasks.demo.handoff, "_create_jobs", failing)
    before = count(posts), count(timeline_entries)

    response = _post_batch(api, author, 4)

    assert response.status_code == 503 and "Retry-After" in response.headers
    assert (count(posts), count(timeline_entries)) == before
    assert len(admitted) == 4
    with engine().connect() as conn:
        assert all(jobs.find(conn, j).state == jobs.ABANDONED for j in admitted)


def test_bad_input_is_422_with_a_sentence_naming_the_item(api):
    author, _ = make_following(api, followers=1)
    before = count(posts)

    def batch(items):
        return api.post("/posts:batch", json={"posts": items}, headers=author.headers)

    empty = batch([])
    too_many = _post_batch(api, author, BATCH_MAX + 1)
    bad_item = batch([{"text": "fine"}, {"text": "fine"}, {"text": "fine"}, {"text": ""}])
    extra = batch([{"text": "x", "y": 1}])
    # The author is the caller: an item naming one, even the caller, is refused.
    authored = batch([{"text": "fine"}, {"author": author.name, "text": "x"}])

    for response in (empty, too_many, bad_item, extra, authored):
        assert response.status_code == 422, response.text
    assert "posts" in empty.json()["detail"] and "at least 1" in empty.json()["detail"]
    assert f"at most {BATCH_MAX}" in too_many.json()["detail"]
    assert "posts.3.text" in bad_item.json()["detail"]
    assert "posts.0.y" in extra.json()["detail"]
    assert "posts.1.author" in authored.json()["detail"]
    assert count(posts) == before
