"""End to end: API, worker, beat and Flower as subprocesses, driven over HTTP."""
import time

import httpx
import pytest

from tests import processes, support
from tests.integration.helpers import follow, post_as, signup

pytestmark = pytest.mark.e2e
FLOWER_AUTH = ("admin", "e2e-flower-pass")


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    support.reset_namespace("e2e")
    api_port, flower_port = support.free_port(), support.free_port()
    env = support.stack_env("e2e", "floodgate_e2e", tmp, AGGREGATION_INTERVAL_S=2,
                            FANOUT_CHUNK_SIZE=10, FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH),
                            FLOWER_PORT=flower_port)
    parts = [
        processes.api(env, tmp, api_port),
        processes.worker(env, tmp),
        processes.beat(env, tmp, tmp / "beat-schedule"),
        # FAULTS row 18: a second beat at once must be harmless
        processes.Part("beat2", [str(processes.BIN / "celery"), "-A", "config", "beat", "--loglevel=INFO",
                                 "-s", str(tmp / "beat2-schedule")], env, tmp),
        processes.flower(env, tmp),
    ]
    base = f"http://127.0.0.1:{api_port}"
    try:
        processes.wait_http(f"{base}/healthz")
        yield {"api": base, "flower": f"http://127.0.0.1:{flower_port}", "parts": parts,
               "database_url": env["DATABASE_URL"]}
    finally:
        for part in parts:
            part.stop()


def test_users_follows_a_post_and_its_job_reach_every_follower_once(system):
    with httpx.Client(base_url=system["api"], timeout=10) as http:
        author = signup(http, "author")
        fans = [signup(http, f"fan{i}") for i in range(25)]  # three chunks of 10
        for fan in fans:
            follow(http, fan, author)

        accepted = post_as(http, author, "e2e #ship #ship2")
        assert accepted.status_code == 202
        body = accepted.json()
        assert accepted.headers["location"] == body["status_url"]

        deadline = time.monotonic() + 60
        while (job := http.get(body["status_url"], headers=author.headers).json())["state"] \
                != "succeeded":
            assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.3)
        assert job["progress"] == {"chunks_done": 3, "chunks_total": 3}

        for fan in fans:
            mine = http.get(f"/timelines/{fan.name}", headers=fan.headers).json()["posts"]
            ids = [p["post_id"] for p in mine]
            assert ids.count(body["post_id"]) == 1

        # beat aggregates every 2 s; the window holding the post shows up on its own
        deadline = time.monotonic() + 30
        while not any(["#ship", 1] in w["top_hashtags"]
                      for w in http.get("/aggregates", headers=author.headers).json()["windows"]):
            assert time.monotonic() < deadline, "beat never aggregated the post's window"
            time.sleep(0.5)


def test_flower_demands_credentials_and_lists_the_tasks_that_ran(system):
    flower = system["flower"]
    processes.wait_http(f"{flower}/healthcheck")
    for path in ("/", "/tasks", "/broker", "/api/workers", "/api/tasks"):
        assert httpx.get(flower + path, timeout=5).status_code == 401, path
        assert httpx.get(flower + path, auth=("admin", "wrong"), timeout=5).status_code == 401
    # Workers send no task events until Flower turns them on (its enable_events option),
    # so keep posting until Flower lists one of the fan-outs.
    with httpx.Client(base_url=system["api"], timeout=10) as http:
        watched = signup(http, "watched")
        posted, deadline = [], time.monotonic() + 40
        while not set(posted) & set(httpx.get(f"{flower}/api/tasks", auth=FLOWER_AUTH,
                                               timeout=5).json()):
            assert time.monotonic() < deadline, "Flower never listed a fan-out task"
            posted.append(post_as(http, watched, "seen").json()["job_id"])
            time.sleep(1)
    broker = httpx.get(f"{flower}/broker", auth=FLOWER_AUTH, timeout=10)
    assert broker.status_code == 200
    if support.broker_kind() == "redis":  # on RabbitMQ Flower asks the management plugin
        assert "fanout" in broker.text  # Flower recognises our redis:// broker and its queues


def test_row18_two_beats_at_once_store_each_window_once_with_the_right_count(system):
    from sqlalchemy import create_engine, func, select

    from tasks.demo.models import aggregates, posts

    with httpx.Client(base_url=system["api"], timeout=10) as http:
        poster = signup(http, "beats")
        for i in range(5):
            assert post_as(http, poster, f"#twice {i}").status_code == 202
    engine = create_engine(system["database_url"])

    def tagged(rows) -> int:
        return sum(n for r in rows for tag, n in r.top_hashtags if tag == "#twice")

    try:
        deadline = time.monotonic() + 30  # both beats fire every 2 s
        while tagged(rows := _all(engine, aggregates)) < 5:
            assert time.monotonic() < deadline, "the posts' windows were never aggregated"
            time.sleep(0.5)
        with engine.connect() as conn:
            for row in rows:
                real = conn.execute(select(func.count()).where(
                    posts.c.created_at >= row.window_start, posts.c.created_at < row.window_end)).scalar()
                assert row.posts == real, (row.window_start, row.posts, real)
            starts = [r.window_start for r in rows]
            assert len(starts) == len(set(starts))
        assert tagged(rows) == 5  # counted once, though two beats enqueued every window
    finally:
        engine.dispose()
    beats = [p for p in system["parts"] if p.name.startswith("beat")]
    assert all(p.proc.poll() is None for p in beats)
    assert all("Sending due task aggregate-closed-window" in p.output() for p in beats)


def _all(engine, table):
    from sqlalchemy import select

    with engine.connect() as conn:
        return conn.execute(select(table)).all()
