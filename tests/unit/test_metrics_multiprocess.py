"""Counters from several API processes add up in /metrics (PROMETHEUS_MULTIPROC_DIR).

prometheus-client picks its value store when it is first imported, so every process
here is a fresh subprocess with the variable already in its environment: two that
increment the guard's counters, then one that serves /metrics through the app.
"""
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]

# The counters are imported through api.metrics, the one module that names where they live.
INCREMENT = """
import sys
from api.metrics import ACCEPTED, REFUSED
ACCEPTED.labels("fanout").inc(int(sys.argv[1]))
REFUSED.labels("fanout").inc(int(sys.argv[2]))
"""

SCRAPE = """
import os
import sys
from fastapi.testclient import TestClient
from api.main import app
with TestClient(app) as client:
    answer = client.get("/metrics", headers={"Authorization": "Bearer " + os.environ["OPS_TOKEN"]})
assert answer.status_code == 200, answer.status_code
sys.stdout.write(answer.text)
"""


def run(code: str, *args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def samples(text: str) -> dict[tuple[str, tuple], list[float]]:
    found: dict[tuple[str, tuple], list[float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault((s.name, tuple(sorted(s.labels.items()))), []).append(s.value)
    return found


def test_counters_from_two_processes_are_summed(tmp_path):
    # The unit conftest has set BROKER_URL=memory:// and a SQLite DATABASE_URL; the
    # children inherit them. The directory is new and empty, as at a container's start.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first, second = run(INCREMENT, "3", "1", env=env), run(INCREMENT, "4", "2", env=env)
    finish(first), finish(second)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # one file per process

    found = samples(finish(run(SCRAPE, env=env)))

    def value(name, **labels):
        return found[(name, tuple(sorted(labels.items())))]

    assert value("floodgate_accepted_total", queue="fanout") == [7.0]
    assert value("floodgate_refused_total", queue="fanout") == [3.0]
    assert value("floodgate_refused_total", queue="aggregation") == [0.0]  # exported before any
    # The live gauges come once, from the answering process, not once per process.
    assert value("floodgate_queue_limit", queue="fanout") == [1000.0]
    assert len(value("floodgate_jobs_finished_last_minute", state="succeeded")) == 1


def test_without_the_variable_each_process_serves_its_own_counts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    found = samples(finish(run(INCREMENT + SCRAPE.replace("import sys", ""), "5", "0", env=env)))
    assert found[("floodgate_accepted_total", (("queue", "fanout"),))] == [5.0]
    assert ("floodgate_queue_depth", (("queue", "fanout"),)) in found
