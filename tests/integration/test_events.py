"""GET /jobs/{id}/events: Server-Sent Events fed by Redis pub/sub, against a real uvicorn.

Only the job's submitter may follow it. The caps on streams are tested in
test_sse_caps.py; this module's API allows more (SSE_MAX_PER_USER).

Also a measurement (not run by pytest): how many streams one API process holds, for an
API run with SSE_MAX_PER_USER and SSE_MAX_PER_PROCESS at least N::

    python -m tests.integration.test_events http://127.0.0.1:8000 JOB_ID N PID API_KEY
"""
from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import httpx
import pytest
import redis

from tests import processes, support
from tests.integration.helpers import User, follow, post_as, signup, wait_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(support.broker_kind() != "redis",
                                 reason="broker-independent: runs in the Redis pass only")]


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", None
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
        if data is not None:
            events.append((name, json.loads(data)))
    return events


class Stream:
    """One SSE client on a raw socket: cheap enough to open thousands."""

    def __init__(self, host: str, port: int, path: str, api_key: str) -> None:
        self.host, self.port, self.path, self.api_key = host, port, path, api_key
        self.buffer = b""
        self.reader = self.writer = None

    async def open(self) -> int:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\n"
                          f"Authorization: Bearer {self.api_key}\r\n"
                          "Accept: text/event-stream\r\nConnection: close\r\n\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1])

    async def next_event(self) -> tuple[str, dict]:
        while True:
            text = self.buffer.decode(errors="replace").replace("\r\n", "\n")
            if "\n\n" in text:
                block, _, rest = text.partition("\n\n")
                self.buffer = rest.encode()
                events = parse_sse(block + "\n\n")
                if events:
                    return events[0]
                continue  # a ping (comment line)
            chunk = await self.reader.read(4096)
            if not chunk:
                raise ConnectionError("stream closed")
            self.buffer += _dechunk(chunk)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _dechunk(raw: bytes) -> bytes:
    """Drop HTTP/1.1 chunk-size lines (the SSE body is chunked); good enough for SSE text."""
    lines = raw.split(b"\r\n")
    return b"\r\n".join(l for l in lines if not _is_hex(l))


def _is_hex(line: bytes) -> bool:
    return bool(line) and len(line) <= 8 and all(c in b"0123456789abcdefABCDEF" for c in line)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """API in uvicorn; the worker is started by the test (so a job can wait queued)."""
    tmp = tmp_path_factory.mktemp("events")
    support.reset_namespace("e2e")
    port = support.free_port()
    env = support.stack_env("e2e", "floodgate_events", tmp, FANOUT_CHUNK_SIZE=2,
                            SSE_MAX_PER_USER=100)
    api = processes.api(env, tmp, port)
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_http(f"{base}/healthz")
        yield {"base": base, "port": port, "env": env, "tmp": tmp, "api": api}
    finally:
        api.stop()


def _post_job(http: httpx.Client, followers: int) -> tuple[str, User]:
    """A job posted by a new author with ``followers`` fans; its id and the author."""
    author = signup(http, "ev")
    for _ in range(followers):
        follow(http, signup(http, "evf"), author)
    accepted = post_as(http, author, "live")
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["job_id"], author


def _subscribers(job_id: str) -> int:
    from config.settings import get_settings

    client = redis.Redis.from_url(get_settings().meter_redis_url)
    return client.pubsub_numsub(f"floodgate:job:{job_id}")[0][1]


def test_stream_sends_status_then_each_change_then_final_and_closes(system):
    with httpx.Client(base_url=system["base"], timeout=10) as http:
        job_id, author = _post_job(http, followers=5)  # three chunks of two; no worker yet

        async def follow_job() -> list[tuple[str, dict]]:
            stream = Stream("127.0.0.1", system["port"], f"/jobs/{job_id}/events",
                            author.api_key)
            assert await stream.open() == 200
            seen = [await stream.next_event()]
            assert seen[0][0] == "status" and seen[0][1]["state"] == "queued"
            # Subscribed (one Redis subscription in the API, whatever the streams): run it.
            await asyncio.to_thread(wait_for, lambda: _subscribers(job_id) == 1, 10,
                                    "the API never subscribed to the job's channel")
            worker = processes.worker(system["env"], system["tmp"], name="events-worker",
                                      queues="fanout", concurrency=1)
            try:
                while seen[-1][0] != "final":
                    seen.append(await asyncio.wait_for(stream.next_event(), 60))
                closed = await asyncio.wait_for(stream.reader.read(), 10)
            finally:
                stream.close()
                worker.stop()
            assert closed.rstrip(b"\r\n").endswith(b"0") or closed == b""  # last chunk, EOF
            return seen

        seen = asyncio.run(follow_job())
    names = [name for name, _ in seen]
    states = [event["state"] for _, event in seen]
    assert names[-1] == "final" and states[-1] == "succeeded", seen
    assert names.count("final") == 1
    assert "running" in states, seen
    done = [event["progress"]["chunks_done"] for _, event in seen]
    assert done == sorted(done) and done[-1] == 3, seen  # never backwards, ends complete
    assert len(set(map(json.dumps, (e for _, e in seen)))) == len(seen)  # no repeats
    # The stream closed: its subscription is gone too.
    wait_for(lambda: _subscribers(job_id) == 0, 10, "the channel stayed subscribed")


def test_a_finished_job_gets_its_final_event_at_once(system):
    with httpx.Client(base_url=system["base"], timeout=10) as http:
        job_id, author = _post_job(http, followers=1)
        worker = processes.worker(system["env"], system["tmp"], name="events-worker2",
                                  queues="fanout", concurrency=1)
        try:
            wait_for(lambda: http.get(f"/jobs/{job_id}", headers=author.headers)
                     .json()["state"] == "succeeded", 60, "job never finished")
        finally:
            worker.stop()
        with http.stream("GET", f"/jobs/{job_id}/events", headers=author.headers) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            body = response.read().decode()
    events = parse_sse(body)
    assert [name for name, _ in events] == ["final"]
    assert events[0][1]["progress"] == {"chunks_done": 1, "chunks_total": 1}


def test_unknown_job_and_someone_elses_job_are_404_before_any_stream(system):
    with httpx.Client(base_url=system["base"], timeout=10) as http:
        job_id, _ = _post_job(http, followers=1)
        other = signup(http, "ev-other")
        for job in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", job_id):
            response = http.get(f"/jobs/{job}/events", headers=other.headers)
            assert response.status_code == 404
            assert response.headers["content-type"].startswith("application/json")
    assert _subscribers(job_id) == 0  # nothing was held for the refused stream


def test_a_stream_without_a_valid_key_is_401(system):
    with httpx.Client(base_url=system["base"], timeout=10) as http:
        job_id, _ = _post_job(http, followers=1)
        for headers in ({}, {"Authorization": "Bearer fg_made_up"}):
            response = http.get(f"/jobs/{job_id}/events", headers=headers)
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"


def test_dropped_streams_cost_nothing_and_share_one_redis_connection(system):
    with httpx.Client(base_url=system["base"], timeout=10) as http:
        job_id, author = _post_job(http, followers=1)  # stays queued: no worker
    client = redis.Redis.from_url(support.results_url())

    def pubsub_clients() -> int:
        return sum(1 for c in client.client_list() if int(c.get("sub", 0)) > 0)

    before = pubsub_clients()

    async def open_and_drop(n: int) -> None:
        streams = [Stream("127.0.0.1", system["port"], f"/jobs/{job_id}/events",
                          author.api_key) for _ in range(n)]
        assert set(await asyncio.gather(*(s.open() for s in streams))) == {200}
        await asyncio.gather(*(s.next_event() for s in streams))
        # 50 streams of one job: one subscription, on the one connection already there
        assert _subscribers(job_id) == 1
        assert pubsub_clients() <= max(before, 1)
        for s in streams:
            s.close()

    asyncio.run(open_and_drop(50))
    wait_for(lambda: _subscribers(job_id) == 0, 10, "dropped streams left the channel subscribed")


# ---------------------------------------------------------------- measurement


async def _hold(base: str, job_id: str, n: int, pid: int, api_key: str) -> dict:
    import psutil

    host, port = base.removeprefix("http://").split(":")
    proc = psutil.Process(pid)
    rss0, cpu0 = proc.memory_info().rss, proc.cpu_times()
    streams = [Stream(host, int(port), f"/jobs/{job_id}/events", api_key) for _ in range(n)]
    t0 = time.monotonic()
    for i in range(0, n, 200):  # open in batches of 200
        batch = streams[i:i + 200]
        codes = await asyncio.gather(*(s.open() for s in batch))
        assert set(codes) == {200}, codes
        await asyncio.gather(*(s.next_event() for s in batch))
    opened_s = time.monotonic() - t0
    await asyncio.sleep(2)
    rss1, cpu1 = proc.memory_info().rss, proc.cpu_times()
    idle0 = proc.cpu_times()
    await asyncio.sleep(10)
    idle1 = proc.cpu_times()
    from config.settings import get_settings

    client = redis.Redis.from_url(get_settings().meter_redis_url)
    event = {"job_id": job_id, "state": "running", "progress": {"chunks_done": 1,
             "chunks_total": 2}, "result": None, "error": None}
    t1 = time.monotonic()
    client.publish(f"floodgate:job:{job_id}", json.dumps(event))
    await asyncio.gather(*(s.next_event() for s in streams))
    fanout_s = time.monotonic() - t1
    final = {**event, "state": "succeeded", "progress": {"chunks_done": 2, "chunks_total": 2}}
    t2 = time.monotonic()
    client.publish(f"floodgate:job:{job_id}", json.dumps(final))
    await asyncio.gather(*(s.next_event() for s in streams))
    final_s = time.monotonic() - t2
    for s in streams:
        s.close()
    return {
        "streams": n,
        "open_s": round(opened_s, 2),
        "rss_before_mib": round(rss0 / 2**20, 1),
        "rss_with_streams_mib": round(rss1 / 2**20, 1),
        "kib_per_stream": round((rss1 - rss0) / n / 1024, 1),
        "cpu_s_opening": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 2),
        "idle_cpu_pct_over_10s": round(((idle1.user + idle1.system)
                                        - (idle0.user + idle0.system)) / 10 * 100, 2),
        "one_event_to_all_s": round(fanout_s, 3),
        "final_event_to_all_s": round(final_s, 3),
    }


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    base_url, job, count, api_pid, key = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                          int(sys.argv[4]), sys.argv[5])
    print(json.dumps(asyncio.run(_hold(base_url, job, count, api_pid, key))))
