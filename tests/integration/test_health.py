"""Health checks against real subprocesses: ``python -m config.health`` (what
docker-compose runs) and the API's ``GET /healthz``.

The worker check pings one worker through the broker (it answers from its consumer
loop); the beat check reads the heartbeat beat writes on every tick. The API's public
check is cached; its detailed one and /metrics need OPS_TOKEN.
"""
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from scheduler import heartbeat
from tests import processes, support
from tests.integration import workers
from tests.integration.helpers import ops_headers, signup
from tests.integration.workers import counter, wait_until

pytestmark = pytest.mark.timeout(180)


def health(*args, env=None, timeout_s=30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "config.health", *args], cwd=processes.ROOT,
                          env=env or workers.faults_env(), capture_output=True, text=True,
                          timeout=timeout_s)


def test_the_worker_check_passes_while_the_worker_consumes_and_fails_once_it_is_stopped(
        app, tmp_path):
    name = f"health-{uuid.uuid4().hex[:6]}"
    node = f"{name}@{socket.gethostname()}"
    worker = workers.start(tmp_path, name)
    try:
        ok = health("worker", "--name", node, "--timeout-s", "5")
        assert ok.returncode == 0, ok.stderr
        assert f"worker {node} answered" in ok.stdout

        # Busy with a task shorter than the timeout: it answers once the task is done.
        k = uuid.uuid4().hex
        app.send_task("tests.fault_tasks.slow_effect", args=(k, 2), queue="default")
        wait_until(lambda: counter("attempts", k) == 1, 15, "the task never started")
        busy = health("worker", "--name", node, "--timeout-s", "5")
        assert busy.returncode == 0, busy.stderr

        # SIGSTOP: the process exists, but its consumer loop answers nothing.
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            stopped = health("worker", "--name", node, "--timeout-s", "3")
            assert stopped.returncode == 1
            assert stopped.stderr.strip() == (
                f"unhealthy: worker {node} did not answer a ping through the broker within 3 s: "
                "it is down, stopped, cut off from the broker, or busy with one task longer "
                "than that")
            assert time.monotonic() - started < 20
        finally:
            os.kill(worker.pid, signal.SIGCONT)

        # Another node name on the same broker is not this worker.
        other = health("worker", "--name", f"nobody@{socket.gethostname()}", "--timeout-s", "1")
        assert other.returncode == 1 and "did not answer" in other.stderr
    finally:
        worker.stop()
    gone = health("worker", "--name", node, "--timeout-s", "2")
    assert gone.returncode == 1 and "did not answer" in gone.stderr


def test_the_worker_check_fails_with_a_sentence_when_the_broker_is_unreachable(tmp_path):
    url = ("redis://127.0.0.1:1/0" if support.broker_kind() == "redis"
           else "amqp://guest:guest@127.0.0.1:1//")
    down = health("worker", "--name", "worker@nowhere", "--timeout-s", "2",
                  env=workers.faults_env(BROKER_URL=url))
    assert down.returncode == 1
    assert down.stderr.startswith("unhealthy: "), down.stderr
    assert "Traceback" not in down.stderr


def test_the_beat_check_passes_while_beat_ticks_and_fails_after_it_stops(app, tmp_path):
    beat_file = tmp_path / heartbeat.FILENAME
    env = workers.faults_env(AGGREGATION_INTERVAL_S=2)
    missing = health("beat", "--max-age-s", "15", "--file", str(beat_file), env=env)
    assert missing.returncode == 1
    assert f"beat has written no heartbeat to {beat_file}" in missing.stderr

    beat = processes.beat(env, tmp_path, tmp_path / "beat-schedule")
    try:
        wait_until(beat_file.exists, 30, "beat never wrote its heartbeat")
        ok = health("beat", "--max-age-s", "15", "--file", str(beat_file), env=env)
        assert ok.returncode == 0, ok.stderr + beat.output()
        assert ok.stdout.strip() == "healthy: beat is ticking"
        # It keeps ticking (at least every TICK_EVERY_S), and records each entry it sent.
        first = heartbeat.read(beat_file)["tick"]
        wait_until(lambda: heartbeat.read(beat_file).get("tick", 0) > first,
                   heartbeat.TICK_EVERY_S + 5, "the heartbeat did not advance")
        runs = wait_until(lambda: heartbeat.last_runs(beat_file).get("aggregate-closed-window"),
                          15, "beat never recorded sending aggregate-closed-window")
        assert abs(runs - time.time()) < 15
        assert set(heartbeat.last_runs(beat_file)) <= {
            "aggregate-closed-window", "republish-stale-jobs", "celery.backend_cleanup"}
    finally:
        beat.stop()
    assert beat.proc.returncode is not None

    time.sleep(4)
    stale = health("beat", "--max-age-s", "3", "--file", str(beat_file), env=env)
    assert stale.returncode == 1
    assert "s old (limit 3 s): beat is stuck or stopped" in stale.stderr, stale.stderr


# ------------------------------------------------ the API's own: GET /healthz and the ops routes

HEALTH_CACHE_S = 30  # longer than the polling below takes, however loaded the machine


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """The API in two processes (``--workers 2``), adding up their counters."""
    tmp = tmp_path_factory.mktemp("health-api")
    support.reset_namespace("e2e")  # on RabbitMQ, makes the vhost the first time
    port = support.free_port()
    multiproc = tmp / "metrics"
    multiproc.mkdir()
    env = support.stack_env("e2e", "floodgate_health_api", tmp, HEALTH_CACHE_S=HEALTH_CACHE_S,
                            PROMETHEUS_MULTIPROC_DIR=multiproc)
    api = processes.api(env, tmp, port, workers=2)
    try:
        processes.wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}"
    finally:
        api.stop()


def check_runs(base: str, route: str) -> float:
    """``floodgate_health_checks_total{route=...}``, summed over the API's processes."""
    text = httpx.get(f"{base}/metrics", headers=ops_headers(), timeout=10).text
    prefix = f'floodgate_health_checks_total{{route="{route}"}} '
    return sum(float(line[len(prefix):]) for line in text.splitlines()
               if line.startswith(prefix))


def test_fifty_calls_to_healthz_run_the_checks_at_most_once_per_process(api_server):
    """The broker check (a confirmed publish on RabbitMQ) runs once per HEALTH_CACHE_S
    per process, not once per call."""
    with httpx.Client(base_url=api_server, timeout=10) as http:
        http.get("/healthz")  # whatever ran at start-up is counted before
        before = check_runs(api_server, "/healthz")
        answers = [http.get("/healthz") for _ in range(50)]
    assert {a.status_code for a in answers} == {200}
    assert {a.text for a in answers} == {'{"status":"ok"}'}
    assert check_runs(api_server, "/healthz") - before <= 2  # one per process at most


def test_details_and_metrics_need_the_ops_token(api_server):
    with httpx.Client(base_url=api_server, timeout=10) as http:
        user = signup(http, "health")
        for route in ("/healthz/details", "/metrics"):
            for headers in ({}, user.headers, {"Authorization": "Bearer wrong-token"}):
                refused = http.get(route, headers=headers)
                assert refused.status_code == 401, (route, headers, refused.text)
                assert refused.headers["WWW-Authenticate"] == "Bearer"
            assert http.get(route, headers=ops_headers()).status_code == 200
        details = http.get("/healthz/details", headers=ops_headers()).json()
    assert details == {"status": "ok", "checks": {"broker": "ok", "result_backend": "ok",
                                                  "database": "ok"}}
