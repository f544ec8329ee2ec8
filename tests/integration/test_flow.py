"""The demo flow through the real broker, result backend, database and a worker."""
import time

from config.settings import get_settings
from scheduler.tasks import aggregate_closed_window
from tasks.demo.models import timeline_entries
from tests.integration.helpers import (
    count,
    make_following,
    ops_headers,
    post_as,
    read_job,
    timeline_of,
    wait_for,
)


def test_a_post_reaches_every_follower_exactly_once_in_parallel_chunks(api):
    author, fans = make_following(api, followers=120)  # 3 chunks of 50
    accepted = post_as(api, author, "hello #floodgate")
    assert accepted.status_code == 202
    body = accepted.json()

    job = wait_for(lambda: (j := read_job(api, author, body["status_url"]))["state"] == "succeeded"
                   and j)
    assert job["progress"] == {"chunks_done": 3, "chunks_total": 3}
    assert job["result"] == {"delivered": 120, "chunks": 3} and job["error"] is None

    assert count(timeline_entries, timeline_entries.c.post_id == body["post_id"]) == 121
    for fan in (fans[0], fans[60], fans[-1]):
        posts = timeline_of(api, fan)
        assert [p["post_id"] for p in posts].count(body["post_id"]) == 1


def test_a_job_reports_running_state_names_from_the_api_vocabulary(api):
    author, _ = make_following(api, followers=1)
    body = post_as(api, author, "x").json()
    states = set()
    wait_for(lambda: states.add(s := read_job(api, author, body["status_url"])["state"])
             or s == "succeeded")
    assert states <= {"queued", "running", "succeeded"}


def test_aggregation_runs_on_the_aggregation_queue_and_the_api_only_reads_it(api):
    author, _ = make_following(api, followers=0)
    interval_s = get_settings().aggregation_interval_s
    if interval_s - time.time() % interval_s < 5:  # the three posts must share one window
        time.sleep(interval_s - time.time() % interval_s + 0.1)
    for text in ("#alpha one", "#alpha #beta two", "#Alpha three"):
        assert post_as(api, author, text).status_code == 202
    now = (time.time() // interval_s + 1) * interval_s + 1  # their window has just closed
    result = aggregate_closed_window.apply_async(kwargs={"now": now}).get(timeout=30)
    assert result[-1]["posts"] >= 3
    windows = api.get("/aggregates?limit=5", headers=author.headers).json()["windows"]
    newest = max(windows, key=lambda w: w["window_start"])
    assert ["#alpha", 3] in newest["top_hashtags"] and ["#beta", 1] in newest["top_hashtags"]


def test_health_reports_every_dependency_up(api):
    response = api.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    details = api.get("/healthz/details", headers=ops_headers())
    assert details.status_code == 200
    assert details.json()["checks"] == {"broker": "ok", "result_backend": "ok", "database": "ok"}
