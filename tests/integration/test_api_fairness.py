"""Fair admission through the API, against a real server (``python -m api.serve``) and a
real broker (FLOODGATE_TEST_BROKER), with no worker, so that what is admitted stays queued.

``fanout`` holds 20: shares apply from 10 (FAIR_WATERMARK 0.5), sheddable work is
refused from 10, default work from 18, critical work at 20. Each user is a tenant.
"""
from __future__ import annotations

import contextlib

import httpx
import pytest

from tests import processes, support
from tests.integration.helpers import User, signup, timeline_of, unique

pytestmark = pytest.mark.e2e

LIMIT = 20
WATERMARK = LIMIT // 2
DEFAULT_BOUND = 18   # 90 % of the limit
SHEDDABLE_BOUND = 10  # 50 %


@contextlib.contextmanager
def running_api(tmp_path, **settings):
    """An API on an empty ``fanout`` of LIMIT, with these settings (fair admission on,
    whatever the suite's environment says); an httpx client on it."""
    support.reset_namespace("fair")
    db = support.NAMESPACES["fair"][0]
    settings = {"FAIR_ADMISSION": "true", "TENANT_WEIGHTS": "", "CRITICAL_USERS": "",
                "FAIR_WATERMARK": "0.5", "FAIR_SHEDDABLE_FRACTION": "0.5",
                "FAIR_DEFAULT_FRACTION": "0.9", **settings}
    env = support.stack_env("fair", "floodgate_fairness", tmp_path,
                            QUEUE_LIMITS=f"fanout={LIMIT},aggregation=50,default=5000",
                            # the tenants' counts beside the broker's, emptied with it
                            METER_URL=f"{support.REDIS}/{db}", **settings)
    with processes.serving_api(env, tmp_path) as (port, api):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield http
    log = api.log_path.read_text()
    assert "Traceback" not in log, log


def post(http: httpx.Client, user: User, criticality: str | None = None) -> httpx.Response:
    body = {"text": "hello"} if criticality is None else {"text": "hi", "criticality": criticality}
    return http.post("/posts", json=body, headers=user.headers)


def post_until_refused(http, user: User, criticality: str | None = None,
                       most: int = LIMIT + 5) -> tuple[int, httpx.Response]:
    """Posts as ``user`` until one is refused: (how many were accepted, the refusal)."""
    for accepted in range(most):
        answer = post(http, user, criticality)
        if answer.status_code != 202:
            return accepted, answer
    raise AssertionError(f"{user.name} was never refused in {most} posts")


def assert_refused(answer: httpx.Response, reason: str) -> dict:
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["reason"] == reason, body
    retry_after = int(answer.headers["Retry-After"])
    assert 1 <= retry_after <= 60 and body["retry_after_s"] == retry_after
    return body


def test_a_noisy_user_is_refused_at_its_share_while_another_is_admitted_to_the_class_bound(
        tmp_path, submit_path):
    with running_api(tmp_path) as http:
        polite, noisy = signup(http, "polite"), signup(http, "noisy")
        assert post(http, polite).status_code == 202

        accepted, refusal = post_until_refused(http, noisy)
        # two users hold messages: each one's share is half the queue
        assert accepted == LIMIT // 2
        body = assert_refused(refusal, "share")
        assert "share" in body["detail"] and body["share"] == LIMIT // 2
        assert_refused(post(http, noisy), "share")  # it stays refused while nothing drains

        more, refusal = post_until_refused(http, polite)
        assert more == DEFAULT_BOUND - (1 + LIMIT // 2)  # the polite one is admitted ...
        assert_refused(refusal, "class")                   # ... up to default work's bound
        assert len(timeline_of(http, noisy)) == LIMIT // 2  # refused posts left nothing
        assert len(timeline_of(http, polite)) == 1 + more


def test_a_heavier_users_share_is_in_proportion_to_its_weight(tmp_path):
    heavy_name = unique("heavy")
    with running_api(tmp_path, TENANT_WEIGHTS=f"{heavy_name}=3") as http:
        light, heavy = signup(http, "light"), signup(http, name=heavy_name)
        assert post(http, light).status_code == 202
        accepted, refusal = post_until_refused(http, heavy)
        assert accepted == LIMIT * 3 // 4  # weights 3 and 1
        assert_refused(refusal, "share")


def test_sheddable_work_is_refused_above_half_the_queue_while_default_work_is_admitted(
        tmp_path):
    with running_api(tmp_path) as http:
        alice, bob = signup(http, "alice"), signup(http, "bob")
        for _ in range(SHEDDABLE_BOUND):
            assert post(http, alice).status_code == 202
        body = assert_refused(post(http, alice, "sheddable"), "class")
        assert "sheddable" in body["detail"] and body["criticality"] == "sheddable"
        assert_refused(post(http, bob, "sheddable"), "class")
        assert post(http, alice, "default").status_code == 202
        assert post(http, bob).status_code == 202


def test_critical_work_is_forbidden_to_users_not_granted_it_and_admitted_to_the_full_limit(
        tmp_path):
    ops_name = unique("ops")
    with running_api(tmp_path, CRITICAL_USERS=ops_name) as http:
        user, ops = signup(http, "user"), signup(http, name=ops_name)
        accepted, refusal = post_until_refused(http, user)
        assert accepted == DEFAULT_BOUND
        assert_refused(refusal, "class")

        forbidden = post(http, user, "critical")
        assert forbidden.status_code == 403, forbidden.text
        assert "CRITICAL_USERS" in forbidden.json()["detail"]
        batch = http.post("/posts:batch", headers=user.headers,
                          json={"posts": [{"text": "a"}], "criticality": "critical"})
        assert batch.status_code == 403, batch.text
        assert len(timeline_of(http, user)) == DEFAULT_BOUND  # nothing written

        assert_refused(post(http, ops, "default"), "class")
        assert post(http, ops, "critical").status_code == 202  # above 90 %
        assert post(http, ops, "critical").status_code == 202
        assert_refused(post(http, ops, "critical"), "full")   # never above the limit


def test_a_batch_is_admitted_in_its_class_and_says_why_each_refused_item_was(tmp_path,
                                                                            submit_path):
    with running_api(tmp_path) as http:
        user = signup(http, "batcher")
        answer = http.post("/posts:batch", headers=user.headers, json={
            "posts": [{"text": f"p{i}"} for i in range(15)], "criticality": "sheddable"})
        assert answer.status_code == 207, answer.text
        body = answer.json()
        assert body["accepted"] == SHEDDABLE_BOUND and body["refused"] == 15 - SHEDDABLE_BOUND
        refused = [item for item in body["results"] if item["status"] == "refused"]
        assert {item["reason"] for item in refused} == {"class"}
        assert int(answer.headers["Retry-After"]) >= 1
        item_class = http.post("/posts:batch", headers=user.headers, json={
            "posts": [{"text": "x", "criticality": "critical"}]})
        assert item_class.status_code == 422  # the batch names the class, not its items


def test_with_fair_admission_off_the_first_to_come_fills_the_queue(tmp_path):
    with running_api(tmp_path, FAIR_ADMISSION="false") as http:
        noisy, polite = signup(http, "noisy"), signup(http, "polite")
        accepted, refusal = post_until_refused(http, noisy, "sheddable")
        assert accepted == LIMIT
        assert_refused(refusal, "full")
        assert_refused(post(http, polite), "full")


def test_the_services_own_tenant_names_cannot_be_taken_by_an_account(tmp_path):
    with running_api(tmp_path) as http:
        for name in ("system", "default"):
            answer = http.post("/users", json={"name": name})
            assert answer.status_code == 409, answer.text


# -- the service's own work: beat's entries and the outbox sweep, as critical --------

@pytest.fixture
def fair_idle_app(monkeypatch):
    """As the suite's ``idle_app`` (a namespace no worker consumes), with the default
    fair admission whatever the suite's environment says."""
    from celery import Celery

    from config import celery_app
    from config.settings import get_settings

    fair = get_settings().model_copy(update={
        "fair_admission": True, "fair_watermark": 0.5, "fair_sheddable_fraction": 0.5,
        "fair_default_fraction": 0.9, "tenant_weights": ""})
    monkeypatch.setattr(celery_app, "get_settings", lambda: fair)
    support.reset_namespace("guard")
    app = Celery("floodgate-fair-idle", set_as_current=False)
    app.config_from_object("config.celeryconfig")
    app.conf.broker_url = support.broker_url("guard")
    celery_app.bound_queues(app)
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            queue.bind(conn.default_channel).declare()
    yield app
    app.close()


def fill_to_the_default_bound(app, queue: str, task: str, limit: int) -> None:
    """Users' default work up to its bound (90 %), then proof that more is refused."""
    from celery_floodgate import QueueFull
    from tests.integration.test_back_pressure import depth

    for _ in range(limit * 9 // 10):
        app.send_task(task, args=("00000000-0000-0000-0000-000000000000", 0), queue=queue)
    with pytest.raises(QueueFull) as refused:
        app.send_task(task, args=("00000000-0000-0000-0000-000000000000", 0), queue=queue)
    assert refused.value.reason == "class"
    assert depth(app, queue) == limit * 9 // 10


def test_the_outbox_sweep_re_sends_as_critical_work_above_the_users_bound(
        fair_idle_app, monkeypatch):
    import time
    import uuid

    from sqlalchemy import select, update

    import tasks.demo.submit
    from scheduler.tasks import republish_stale_jobs
    from tasks.demo import jobs as job_records
    from tasks.demo.db import engine
    from tasks.demo.models import jobs
    from tasks.demo.timeline import create_post, create_user
    from tests.integration.test_back_pressure import FANOUT, LIMIT, depth

    fill_to_the_default_bound(fair_idle_app, "fanout", FANOUT, LIMIT)
    name, job_id = unique("swept"), str(uuid.uuid4())
    with engine().begin() as conn:  # an accepted job whose message the broker lost
        create_user(conn, name)
        post = create_post(conn, name, "lost")
        job_records.create_job(conn, job_id, "fanout", post["post_id"])
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(updated_at=0, created_at=0))
    monkeypatch.setattr(tasks.demo.submit, "app", fair_idle_app)
    started = time.time()

    assert republish_stale_jobs() >= 1
    with engine().connect() as conn:
        touched = conn.execute(select(jobs.c.updated_at).where(jobs.c.id == job_id)).scalar_one()
    assert touched >= started  # re-sent, where users' default work is refused
    assert depth(fair_idle_app) > LIMIT * 9 // 10


def test_beats_entries_are_sent_as_critical_work_above_the_users_bound(fair_idle_app, tmp_path):
    from datetime import timedelta

    from celery.beat import ScheduleEntry

    from scheduler.heartbeat import HeartbeatScheduler
    from tests.integration.test_back_pressure import depth

    aggregation = "scheduler.tasks.aggregate_closed_window"
    limit = 50  # QUEUE_LIMITS in conftest: aggregation=50
    fill_to_the_default_bound(fair_idle_app, "aggregation", aggregation, limit)
    beat = HeartbeatScheduler(app=fair_idle_app, schedule_filename=str(tmp_path / "schedule"),
                              lazy=True)
    entry = ScheduleEntry(name="aggregate-closed-window", task=aggregation,
                          schedule=timedelta(seconds=60), app=fair_idle_app)
    beat.apply_async(entry, advance=False)
    assert depth(fair_idle_app, "aggregation") == limit * 9 // 10 + 1
