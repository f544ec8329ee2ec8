"""What the fault tests share: skips per broker pass, known-bug marking, and Floodgate's
API and workers run as subprocesses on a private broker (``System``).

Nothing here imports the app (``config`` or ``tasks``: importing them would make the
Floodgate Celery app current in the test process, and pytest-celery's fixtures would
then load its configuration from this process's environment); the migrations that make
each system's database (support.database_url) import only the settings and the models.
API and workers get an explicit environment, with the session's API_KEY_SECRET and
OPS_TOKEN (support.api_env()); the app's tables are read with plain SQL.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests import processes, support

RESULTS_DB = 9  # the shared Redis database this suite owns, for the result backend
RESULTS_URL = f"{support.REDIS}/{RESULTS_DB}"
FANOUT = "tasks.fanout.fanout_post"
SUCCEEDED_LINE = re.compile(
    r"Task (?P<task>[\w.]+)\[(?P<id>[0-9a-f-]{36})\] succeeded in [\d.e-]+s: (?P<result>.*)")


def only_on(kind: str):
    """Run a broker-specific test only in the integration pass of that broker."""
    other = "redis" if kind == "amqp" else "amqp"
    return pytest.mark.skipif(
        support.broker_kind() != kind,
        reason=f"{'RabbitMQ' if kind == 'amqp' else 'Redis'}-only fault: runs in the "
               f"FLOODGATE_TEST_BROKER={kind} pass, not the {other} one")


requires_rabbitmq = only_on("amqp")
requires_redis = only_on("redis")


# -- Floodgate as subprocesses ----------------------------------------------------------------
def _settings_variables() -> set[str]:
    """The app's environment variables: the fields of config.settings.Settings (importing
    the settings module builds no app and reads no environment)."""
    from config.settings import Settings

    return {name.upper() for name in Settings.model_fields}


# Not inherited from this process: integration conftests set some of them for themselves.
APP_VARIABLES = _settings_variables() | {"TEST_BROKER"}


class System:
    """The API and workers of one test, on its private broker and its own database."""

    def __init__(self, tmp: Path, broker_url: str, db_name: str, **settings) -> None:
        self.tmp = tmp
        self.db_url = support.database_url(db_name, str(tmp))
        env = {k: v for k, v in os.environ.items() if k not in APP_VARIABLES}
        env.update(
            BROKER_URL=broker_url,
            RESULT_BACKEND=RESULTS_URL,
            DATABASE_URL=self.db_url,
            FLOWER_BASIC_AUTH="faults:not-a-placeholder",
            **support.api_env(),
            REPUBLISH_AFTER_S="10",
            PYTHONUNBUFFERED="1",
        )
        env.update({k.upper(): str(v) for k, v in settings.items()})
        self.env = env
        self.parts: list[processes.Part] = []
        self.base_url: str | None = None
        self._engine = None

    # parts
    def start_api(self) -> str:
        port = support.free_port()
        self.parts.append(processes.api(self.env, self.tmp, port))
        self.base_url = f"http://127.0.0.1:{port}"
        processes.wait_http(f"{self.base_url}/healthz", timeout_s=30)
        return self.base_url

    def start_worker(self, name: str = "worker", concurrency: int = 4,
                     queues: str = "fanout,aggregation,default",
                     pool: str | None = None) -> processes.Part:
        """Floodgate's default pool (one task at a time), or ``pool`` with ``concurrency``."""
        part = processes.worker(self.env, self.tmp, name=name, queues=queues, pool=pool,
                                concurrency=concurrency,
                                extra=("--without-mingle", "--without-gossip"))
        self.parts.append(part)
        wait_for(lambda: " ready." in part.output(), 30, f"{name} never became ready",
                 on_timeout=part.output)
        return part

    def call(self, task_name: str) -> str:
        """Send a task by name through the broker, as beat would (``celery call``)."""
        out = subprocess.run([str(processes.BIN / "celery"), "-A", "config", "call", task_name],
                             cwd=processes.ROOT, env=self.env, capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def http(self, timeout_s: float = 10) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def stop(self) -> None:
        for part in reversed(self.parts):
            part.stop(timeout_s=5)  # the test is over: no need to wait for a warm shutdown
        if self._engine is not None:
            self._engine.dispose()

    # the app's tables, read with an engine of our own
    @property
    def engine(self):
        if self._engine is None:
            args = {"timeout": 30} if self.db_url.startswith("sqlite") else {}
            self._engine = create_engine(self.db_url, connect_args=args)
        return self._engine

    def job_states(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return dict(conn.execute(text("SELECT id, state FROM jobs")).all())

    def wait_jobs(self, job_ids, state: str = "succeeded", timeout_s: float = 60) -> None:
        job_ids = set(job_ids)

        def reached() -> bool:
            states = self.job_states()
            assert not {j for j in job_ids if states.get(j) == "failed"}, \
                f"jobs failed: {self.failures(job_ids)}"
            return all(states.get(j) == state for j in job_ids)

        wait_for(reached, timeout_s, f"{len(job_ids)} jobs did not all reach {state!r}",
                 on_timeout=lambda: Counter(self.job_states().get(j) for j in job_ids))

    def failures(self, job_ids) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, error FROM jobs WHERE state = 'failed'")).all()
        return {r.id: r.error for r in rows if r.id in set(job_ids)}

    def assert_effects_once(self, accepted: dict[str, int], followers: int) -> None:
        """Each accepted job (job_id -> post_id) succeeded and its post is on the author's
        and every follower's timeline exactly once, with one row per finished chunk."""
        with self.engine.connect() as conn:
            def pairs(sql: str) -> dict:
                return dict(conn.execute(text(sql)).all())

            states = pairs("SELECT id, state FROM jobs")
            totals = pairs("SELECT id, chunks_total FROM jobs")
            entries = pairs("SELECT post_id, count(*) FROM timeline_entries GROUP BY post_id")
            chunk_rows = pairs("SELECT job_id, count(*) FROM job_chunks GROUP BY job_id")
            delivered = pairs("SELECT job_id, sum(delivered) FROM job_chunks GROUP BY job_id")
        bad = {}
        for job_id, post_id in accepted.items():
            got = (states.get(job_id), entries.get(post_id), chunk_rows.get(job_id),
                   delivered.get(job_id))
            want = ("succeeded", followers + 1, totals.get(job_id), followers)
            if got != want:
                bad[job_id] = {"got": got, "want": want}
        assert not bad, f"{len(bad)} of {len(accepted)} jobs not delivered exactly once: " \
                        f"{dict(list(bad.items())[:5])}"

    def post_texts(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(text("SELECT text FROM posts")).scalars())


def executions(log: str, task: str = FANOUT) -> Counter:
    """How many times the worker log says each task id of ``task`` succeeded."""
    return Counter(m["id"] for m in SUCCEEDED_LINE.finditer(log) if m["task"] == task)


def results_of(log: str, task: str = FANOUT) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for m in SUCCEEDED_LINE.finditer(log):
        if m["task"] == task:
            found.setdefault(m["id"], []).append(m["result"])
    return found


# -- small helpers ----------------------------------------------------------------------------
def wait_for(predicate, timeout_s: float, message: str, interval_s: float = 0.2,
             on_timeout=None):
    """Poll ``predicate`` until it is truthy (returned); fail with ``message`` and, if
    given, what ``on_timeout()`` says about the state at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f": {str(on_timeout())[-4000:]}" if on_timeout else ""
            raise AssertionError(f"{message} within {timeout_s} s{detail}")
        time.sleep(interval_s)


def make_author(http: httpx.Client, followers: int) -> str:
    """A new account followed by ``followers`` new accounts, each following through its own
    API key. From then on ``http`` acts as the author (its Authorization header carries the
    author's key): ``http.post("/posts", json={"text": ...})``. Returns the author's name."""
    tag = uuid.uuid4().hex[:8]
    author = f"author-{tag}"
    author_key = signup(http, author)
    for i in range(followers):
        fan_key = signup(http, f"fan{i}-{tag}")
        followed = http.post("/follows", json={"followee": author},
                             headers={"Authorization": f"Bearer {fan_key}"})
        assert followed.status_code == 201, followed.text
    http.headers["Authorization"] = f"Bearer {author_key}"
    return author


def signup(http: httpx.Client, name: str) -> str:
    """``POST /users``; the new account's API key."""
    created = http.post("/users", json={"name": name})
    assert created.status_code == 201, created.text
    return created.json()["api_key"]
