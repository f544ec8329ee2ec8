"""LOG_FORMAT=json: one job followed from the API through the worker in JSON lines."""
from __future__ import annotations

import json

import httpx
import pytest

from tests import processes, support
from tests.integration.helpers import follow, post_as, signup, wait_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(support.broker_kind() != "redis",
                                 reason="broker-independent: runs in the Redis pass only")]


def json_lines(text: str) -> list[dict]:
    """Every line, parsed; fails on the first line that is not one JSON object."""
    parsed = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(record, dict) and {"time", "level", "logger", "message"} <= set(record)
        parsed.append(record)
    return parsed


def test_one_job_in_json_lines_of_the_api_and_the_worker(tmp_path):
    support.reset_namespace("e2e")
    port = support.free_port()
    env = support.stack_env("e2e", "floodgate_logs", tmp_path, LOG_FORMAT="json",
                            FANOUT_CHUNK_SIZE=2)
    api = processes.api(env, tmp_path, port)
    worker = processes.worker(env, tmp_path, name="logs-worker", queues="fanout",
                              concurrency=1)
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_http(f"{base}/healthz")
        wait_for(lambda: "ready." in worker.output(), 30, "worker never became ready")
        with httpx.Client(base_url=base, timeout=10) as http:
            author = signup(http, name="logs-author")
            for name in ("logs-fan1", "logs-fan2", "logs-fan3"):
                follow(http, signup(http, name=name), author)
            accepted = post_as(http, author, "follow me")
            assert accepted.status_code == 202
            job_id = accepted.json()["job_id"]
            wait_for(lambda: http.get(f"/jobs/{job_id}", headers=author.headers)
                     .json()["state"] == "succeeded", 60, "the job never finished")
        wait_for(lambda: sum(job_id in line for line in worker.output().splitlines()) >= 4, 10,
                 "the worker never logged the job's tasks")
    finally:
        api.stop()
        worker.stop()

    api_lines = json_lines(api.log_path.read_text())
    worker_lines = json_lines(worker.log_path.read_text())

    submitted = [r for r in api_lines if r.get("job_id") == job_id]
    assert submitted, "the API logged nothing with the job id"
    assert any(r["task_name"] == "tasks.fanout.fanout_post" and r["queue"] == "fanout"
               for r in submitted), submitted
    assert any("POST /posts" in r["message"] for r in api_lines)  # uvicorn's access log too

    ours = [r for r in worker_lines if r.get("job_id") == job_id]
    tasks = {r["task_name"] for r in ours}
    assert tasks == {"tasks.fanout.fanout_post", "tasks.fanout.deliver_chunk"}, ours
    done = [r for r in ours if "succeeded" in r["message"]]
    assert len(done) == 3 and all(r["queue"] == "fanout" for r in done), done  # 1 + 2 chunks
    assert all(r["task_id"] for r in ours)
