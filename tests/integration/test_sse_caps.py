"""What an event stream may cost, against a real server: SSE_MAX_PER_USER (429) and
SSE_MAX_PER_PROCESS (503) with Retry-After, SSE_MAX_LIFETIME_S, SSE_SEND_TIMEOUT_S."""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

import httpx
import pytest
import redis

from tests import processes, support
from tests.integration.helpers import User, post_as, signup, wait_for
from tests.integration.test_events import Stream

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(support.broker_kind() != "redis",
                                 reason="broker-independent: runs in the Redis pass only")]


@contextlib.contextmanager
def running_api(tmp_path, **settings):
    """An API (no worker: jobs stay queued) with these settings; its port."""
    env = support.stack_env("e2e", "floodgate_sse_caps", tmp_path, **settings)
    with processes.serving_api(env, tmp_path) as (port, api):
        yield port
    log = api.log_path.read_text()
    assert "Traceback" not in log, log


def queued_job(http: httpx.Client, prefix: str) -> tuple[User, str]:
    user = signup(http, prefix)
    accepted = post_as(http, user, "follow me")
    assert accepted.status_code == 202, accepted.text
    return user, accepted.json()["job_id"]


def refused(http: httpx.Client, user: User, job_id: str, status: int, setting: str) -> None:
    answer = http.get(f"/jobs/{job_id}/events", headers=user.headers)
    assert answer.status_code == status, answer.text
    assert int(answer.headers["Retry-After"]) > 0
    assert setting in answer.json()["detail"]


async def opened(port: int, user: User, job_id: str) -> Stream:
    stream = Stream("127.0.0.1", port, f"/jobs/{job_id}/events", user.api_key)
    assert await stream.open() == 200
    assert (await stream.next_event())[0] == "status"
    return stream


def test_past_the_user_cap_a_stream_gets_429_and_past_the_process_cap_503(tmp_path):
    with running_api(tmp_path, SSE_MAX_PER_USER=2, SSE_MAX_PER_PROCESS=3) as port, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        (a, job_a), (b, job_b), (c, job_c) = (queued_job(http, p) for p in "abc")

        async def scenario() -> None:
            a_streams = [await opened(port, a, job_a), await opened(port, a, job_a)]
            await asyncio.to_thread(refused, http, a, job_a, 429, "SSE_MAX_PER_USER")
            b_stream = await opened(port, b, job_b)  # the process's third
            await asyncio.to_thread(refused, http, c, job_c, 503, "SSE_MAX_PER_PROCESS")
            await asyncio.to_thread(refused, http, b, job_b, 503, "SSE_MAX_PER_PROCESS")
            a_streams.pop().close()  # gives its slot back when the server sees it go
            deadline = time.monotonic() + 5
            while True:
                stream = Stream("127.0.0.1", port, f"/jobs/{job_c}/events", c.api_key)
                status = await stream.open()
                if status == 200:
                    break
                stream.close()
                assert status == 503 and time.monotonic() < deadline
                await asyncio.sleep(0.1)
            for s in (*a_streams, b_stream, stream):
                s.close()

        asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_stream_past_its_lifetime_ends_with_a_reconnect_event_and_frees_its_slot(tmp_path):
    lifetime_s = 2
    with running_api(tmp_path, SSE_MAX_LIFETIME_S=lifetime_s, SSE_MAX_PER_USER=1) as port, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        user, job_id = queued_job(http, "life")

        async def scenario() -> None:
            stream = await opened(port, user, job_id)
            started = time.monotonic()
            name, data = await asyncio.wait_for(stream.next_event(), lifetime_s + 5)
            assert name == "reconnect" and "SSE_MAX_LIFETIME_S" in data["detail"]
            assert time.monotonic() - started < lifetime_s + 2
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(stream.next_event(), 5)  # then the stream closes
            stream.close()
            again = await opened(port, user, job_id)  # its slot was given back
            again.close()

        asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(tmp_path):
    with running_api(tmp_path, SSE_SEND_TIMEOUT_S=1, SSE_MAX_PER_USER=1) as port, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        user, job_id = queued_job(http, "stall")
        stalled = stalled_stream(port, user, job_id)
        try:
            refused(http, user, job_id, 429, "SSE_MAX_PER_USER")
            flood(job_id)  # megabytes the stalled client never reads
            wait_for(lambda: _opens(port, user, job_id), 30,
                     "the stalled client's stream was never dropped", interval_s=0.5)
        finally:
            stalled.close()


def _opens(port: int, user: User, job_id: str) -> bool:
    async def attempt() -> bool:
        stream = Stream("127.0.0.1", port, f"/jobs/{job_id}/events", user.api_key)
        try:
            return await stream.open() == 200
        finally:
            stream.close()

    return asyncio.run(attempt())


def stalled_stream(port: int, user: User, job_id: str) -> socket.socket:
    """A stream whose client reads its first event, then nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills quickly
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Authorization: Bearer {user.api_key}\r\n\r\n".encode())
    sock.settimeout(10)
    seen = b""
    while b"event: status" not in seen:
        seen += sock.recv(4096)
    assert seen.startswith(b"HTTP/1.1 200"), seen
    return sock


def flood(job_id: str, events: int = 100, size: int = 256 * 1024) -> None:
    """Status events of ``size`` bytes on the job's channel, each one newer."""
    client = redis.Redis.from_url(support.results_url())  # pub/sub spans databases
    for done in range(1, events + 1):
        event = {"job_id": job_id, "state": "running", "result": None, "error": None,
                 "progress": {"chunks_done": done, "chunks_total": events + 1},
                 "padding": "x" * size}
        client.publish(f"floodgate:job:{job_id}", json.dumps(event))
        time.sleep(0.01)
