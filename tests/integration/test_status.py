"""``floodgate status``: --json under load, and --watch in a real terminal (tmux)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

from scheduler import heartbeat
from tests import processes, support
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.e2e
FLOODGATE = str(processes.BIN / "floodgate")
LIMITS = "fanout=20,aggregation=50,default=5000"
#: The tenant the test submits as; critical, so fair admission lets it fill the whole limit.
TENANT = "status-test"


@pytest.fixture
def loaded(tmp_path):
    """The 'status' namespace (limits of its own) with a worker that consumes only 'aggregation', a beat
    heartbeat, and an environment for ``floodgate`` that sees them."""
    from config.celery_app import bound_queues
    from config.settings import get_settings
    from celery import Celery

    support.reset_namespace("status")
    var = tmp_path / "var"
    heartbeat.write(var / heartbeat.FILENAME, time.time(),
                    {"aggregate-closed-window": time.time() - 30})
    # A meter of the namespace's own, emptied above: "accepted 1m" then counts this test's
    # submissions only, not those of earlier tests leaving the one-minute window meanwhile.
    meter = f"{support.REDIS}/{support.NAMESPACES['status'][0]}"
    env = {**os.environ, "BROKER_URL": support.broker_url("status"),
           "RESULT_BACKEND": support.results_url(), "QUEUE_LIMITS": LIMITS, "METER_URL": meter,
           "FLOODGATE_VAR_DIR": str(var), "COLUMNS": "120", "PYTHONPATH": str(processes.ROOT),
           "FAIR_ADMISSION": "true"}  # the per-tenant rows need it (tests/support.py: off)
    worker = processes.worker(env, tmp_path, name="status-worker", queues="aggregation",
                              pool="threads", concurrency=1)
    wait_for(lambda: "ready." in worker.output(), 30, "worker never became ready")
    app = Celery("floodgate-status", set_as_current=False)
    app.config_from_object("config.celeryconfig")
    app.conf.broker_url = support.broker_url("status")
    saved = {k: os.environ.get(k) for k in ("QUEUE_LIMITS", "METER_URL", "FAIR_ADMISSION")}
    os.environ.update(QUEUE_LIMITS=LIMITS, METER_URL=meter, FAIR_ADMISSION="true")
    get_settings.cache_clear()
    try:
        bound_queues(app)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
    try:
        yield {"env": env, "app": app}
    finally:
        worker.stop()
        app.close()


def submit(app, n: int) -> tuple[int, int]:
    """Submit ``n`` critical fan-outs as TENANT, which nobody consumes; returns (accepted,
    refused)."""
    from celery_floodgate import QueueFull
    from celery_floodgate.fairness import CRITICAL, submitting_as

    accepted = refused = 0
    with submitting_as(TENANT, CRITICAL):
        for _ in range(n):
            try:
                app.send_task("tasks.fanout.fanout_post", args=(str(uuid.uuid4()),),
                              queue="fanout")
                accepted += 1
            except QueueFull:
                refused += 1
    return accepted, refused


def status_json(env) -> dict:
    out = subprocess.run([FLOODGATE, "status", "--json"], env=env, capture_output=True,
                         text=True, timeout=60, cwd=processes.ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_json_under_load_counts_depth_accepted_and_refused(loaded):
    start = status_json(loaded["env"])["queues"]["fanout"]
    accepted, refused = submit(loaded["app"], 25)
    assert (accepted, refused) == (20, 5)
    time.sleep(1.5)  # the submit counter flushes once a second
    data = status_json(loaded["env"])
    fanout = data["queues"]["fanout"]
    assert fanout["depth"] == 20 and fanout["limit"] == 20 and fanout["bound"] == 20
    # the last minute, across processes: what earlier tests submitted counts too
    assert fanout["accepted_last_minute"] - start["accepted_last_minute"] == 20
    assert fanout["refused_last_minute"] - start["refused_last_minute"] == 5
    assert set(data["queues"]) == {"fanout", "aggregation", "default"}
    assert data["broker"] == support.broker_kind()
    assert any(queues == ["aggregation"] and name.startswith("status-worker@")
               for name, queues in data["workers"].items()), data["workers"]
    entry = data["beat"]["entries"]["aggregate-closed-window"]
    assert 25 <= entry["ago_s"] < 90
    assert data["beat"]["entries"]["republish-stale-jobs"]["last_run"] is None
    if support.broker_kind() == "redis":
        assert fanout["oldest_age_s"] is not None and fanout["oldest_age_s"] >= 0
    # Per tenant and class: the namespace's meter is new, so these are this test's alone.
    (row,) = [r for r in fanout["tenants"] if r["tenant"] == TENANT]
    assert row == {"tenant": TENANT, "criticality": "critical", "accepted_last_minute": 20,
                   "refused_last_minute": 5, "held": 20}
    print(json.dumps(data, indent=1))


def _screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")
def test_watch_refreshes_in_place_in_a_terminal(loaded):
    session = f"fgstatus-{uuid.uuid4().hex[:6]}"
    env_args = [arg for k, v in loaded["env"].items() if k in
                ("BROKER_URL", "RESULT_BACKEND", "QUEUE_LIMITS", "METER_URL", "FLOODGATE_VAR_DIR",
                 "DATABASE_URL", "FLOWER_BASIC_AUTH", "PYTHONPATH")
                for arg in ("-e", f"{k}={v}")]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "45",
                    *env_args], check=True, cwd=processes.ROOT)
    try:
        subprocess.run(["tmux", "send-keys", "-t", session,
                        f"cd {processes.ROOT} && {FLOODGATE} status --watch --interval 1",
                        "Enter"], check=True)
        first = wait_for(lambda: (s := _screen(session)) and "status-worker@" in s and s, 30,
                         "the status screen never showed up")
        for text in ("fanout", "aggregation", "default", "depth", "accepted 1m", "refused 1m",
                     "aggregate-closed-window", "republish-stale-jobs", "never"):
            assert text in first, first
        assert _row(first, "fanout")[:2] == ["fanout", "0"], first

        # Counts are the last minute's across processes: compare with what was there.
        before = [int(n) for n in _row(first, "fanout")[4:6]]
        submit(loaded["app"], 25)  # 20 accepted, 5 refused
        expected = [str(before[0] + 20), str(before[1] + 5)]
        updated = wait_for(lambda: (s := _screen(session)) and _row(s, "fanout")[1:2] == ["20"]
                           and _row(s, "fanout")[4:6] == expected and s, 30,
                           "the screen never refreshed to the new figures")
        # Refreshed in place: one table on the screen, not a scroll of them.
        assert updated.count("Queues (") == 1, updated
    finally:
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c", ""], check=False)
        time.sleep(0.5)
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def _row(screen: str, queue: str) -> list[str]:
    """Cells of ``queue``'s row in the queue table."""
    for line in screen.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
        if cells and cells[0] == queue:
            return cells
    return []
