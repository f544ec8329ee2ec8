"""What an event stream may cost (api/events.py): slots per user and per process, a
maximum lifetime, a send timeout, and a slot given back however the stream ends."""
from __future__ import annotations

import asyncio
import json

import pytest

from api import events
from api.events import JobEventStream, Slots, StreamsFull, Subscription
from tasks.demo.errors import JobNotFound


def test_a_user_past_the_per_user_cap_gets_429_with_retry_after_and_others_still_get_in():
    slots = Slots(per_user=2, per_process=10)
    slots.acquire(1), slots.acquire(1)
    with pytest.raises(StreamsFull) as refused:
        slots.acquire(1)
    assert refused.value.status_code == 429
    assert refused.value.headers == {"Retry-After": str(events.RETRY_AFTER_S)}
    assert "SSE_MAX_PER_USER" in refused.value.detail
    slots.acquire(2)  # another user is not affected
    assert slots.total == 3


def test_past_the_per_process_cap_everyone_gets_503_with_retry_after():
    slots = Slots(per_user=5, per_process=3)
    for user in (1, 2, 3):
        slots.acquire(user)
    with pytest.raises(StreamsFull) as refused:
        slots.acquire(4)
    assert refused.value.status_code == 503
    assert refused.value.headers["Retry-After"] == str(events.RETRY_AFTER_S)
    assert "SSE_MAX_PER_PROCESS" in refused.value.detail


def test_a_released_slot_can_be_taken_again_and_releasing_twice_frees_one_slot_only():
    slots = Slots(per_user=1, per_process=2)
    release = slots.acquire(1)
    release()
    release()
    slots.acquire(1)
    slots.acquire(2)
    assert slots.total == 2 and slots.by_user == {1: 1, 2: 1}
    with pytest.raises(StreamsFull):
        slots.acquire(3)


class FakeHub:
    def __init__(self) -> None:
        self.unsubscribed = 0

    def unsubscribe(self, sub) -> None:
        self.unsubscribed += 1


def status(state: str = "queued", done: int = 0) -> dict:
    return {"job_id": "j", "state": state, "progress": {"chunks_done": done, "chunks_total": 2},
            "result": None, "error": None}


def test_a_stream_past_its_lifetime_ends_with_a_reconnect_event_and_unsubscribes():
    hub = FakeHub()

    async def follow():
        sub = Subscription(hub, "j")
        return [e async for e in events.events(sub, status(), lifetime_s=0.2)]

    seen = asyncio.run(asyncio.wait_for(follow(), 5))
    assert [e["event"] for e in seen] == ["status", "reconnect"]
    assert "SSE_MAX_LIFETIME_S" in json.loads(seen[1]["data"])["detail"]
    assert seen[1]["retry"] == events.RECONNECT_MS
    assert hub.unsubscribed == 1


def test_events_arriving_before_the_lifetime_ends_are_all_sent():
    hub = FakeHub()

    async def follow():
        sub = Subscription(hub, "j")
        sub.put(status("running", 1))
        sub.put(status("succeeded", 2))
        return [e["event"] async for e in events.events(sub, status(), lifetime_s=5)]

    assert asyncio.run(asyncio.wait_for(follow(), 5)) == ["status", "status", "final"]


class Client:
    """The ASGI side of one connection: what the stream sent, and how it reads."""

    def __init__(self, disconnect_at_once: bool = False, stalls: bool = False) -> None:
        self.sent: list[dict] = []
        self.disconnect_at_once, self.stalls = disconnect_at_once, stalls

    async def receive(self) -> dict:
        if not self.disconnect_at_once:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        if self.stalls and message["type"] == "http.response.body":
            await asyncio.sleep(3600)  # a client that stopped reading: its buffers are full
        self.sent.append(message)


def serve(content, client: Client, send_timeout_s: float = 5) -> tuple[list[str], float]:
    """Run a JobEventStream to its end; what its on_close callables did, and how long."""
    closed: list[str] = []

    async def run() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = JobEventStream(content, on_close=(lambda: closed.append("sub"),
                                                     lambda: closed.append("slot")),
                                  ping=0, send_timeout=send_timeout_s)
        await response({"type": "http", "method": "GET", "headers": []}, client.receive,
                       client.send)
        return loop.time() - started

    return closed, asyncio.run(asyncio.wait_for(run(), 10))


async def two_events():
    yield {"event": "status", "data": "{}"}
    yield {"event": "final", "data": "{}"}


async def endless():
    while True:
        yield {"event": "status", "data": "{}"}
        await asyncio.sleep(0.01)


def test_a_stream_that_finishes_gives_its_slot_back():
    client = Client()
    closed, _ = serve(two_events(), client)
    assert closed == ["sub", "slot"]
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_a_client_gone_before_the_stream_started_gives_its_slot_back():
    closed, _ = serve(endless(), Client(disconnect_at_once=True))
    assert closed == ["sub", "slot"]


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout():
    closed, elapsed_s = serve(endless(), Client(stalls=True), send_timeout_s=0.3)
    assert closed == ["sub", "slot"]
    assert 0.3 <= elapsed_s < 2


def test_a_refused_or_unknown_job_holds_no_slot(monkeypatch):
    monkeypatch.setattr(events, "_slots", Slots(per_user=1, per_process=5))

    async def not_yours(job_id, owner_id):
        raise JobNotFound(job_id)

    monkeypatch.setattr(events, "open_stream", not_yours)
    for _ in range(3):  # a slot leaked by the first would refuse the second (cap 1)
        with pytest.raises(JobNotFound):
            asyncio.run(events.stream("00000000-0000-0000-0000-000000000000", 7))
    assert events.slots().total == 0
