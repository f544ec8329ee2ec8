"""Slow clients against the real server (``python -m api.serve``): a request must arrive
whole within REQUEST_READ_TIMEOUT_S, and past API_LIMIT_CONCURRENCY connections the
excess is answered 503 at once, while normal clients keep being answered promptly."""
from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from tests import processes, support

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(support.broker_kind() != "redis",
                                 reason="broker-independent: runs in the Redis pass only")]

READ_TIMEOUT_S = 2
LIMIT = 10       # API_LIMIT_CONCURRENCY's smallest value
MARGIN_S = 1.0   # a loaded two-core machine
BYTE_EVERY_S = 0.3
PROMPT_S = 1.0   # a normal request's answer, while slow clients wait


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    env = support.stack_env("e2e", "floodgate_slow", tmp,
                            REQUEST_READ_TIMEOUT_S=READ_TIMEOUT_S, API_LIMIT_CONCURRENCY=LIMIT)
    with processes.serving_api(env, tmp) as (port, api):
        yield {"port": port, "api": api}


class SlowClient:
    """Sends ``at_once``, then ``slowly`` a byte every BYTE_EVERY_S, reading meanwhile;
    notes when the server closed the connection and what it answered."""

    def __init__(self, port: int, at_once: bytes, slowly: bytes) -> None:
        self.port, self.at_once, self.slowly = port, at_once, slowly
        self.answer = b""
        self.closed_after_s: float | None = None

    async def run(self) -> SlowClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        started = time.monotonic()
        reading = asyncio.ensure_future(self._read(reader, started))
        try:
            writer.write(self.at_once)
            for byte in self.slowly:
                await writer.drain()
                await asyncio.wait([reading], timeout=BYTE_EVERY_S)
                if reading.done():
                    break
                writer.write(bytes([byte]))
            await asyncio.wait_for(reading, READ_TIMEOUT_S + 5)
        except ConnectionError:
            await reading  # the server closed first: it has noted when
        finally:
            writer.close()
        return self

    async def _read(self, reader: asyncio.StreamReader, started: float) -> None:
        try:
            while chunk := await reader.read(4096):
                self.answer += chunk
        except ConnectionError:
            pass
        self.closed_after_s = time.monotonic() - started


def slow_head(port: int) -> SlowClient:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 60 + b"\r\n\r\n"
    return SlowClient(port, head[:1], head[1:])


def slow_body(port: int) -> SlowClient:
    """A whole head at once, then a body a byte at a time."""
    body = b'{"name": "' + b"b" * 80 + b'"}'
    head = (b"POST /users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    return SlowClient(port, head, body)


async def prompt_answers(port: int, for_s: float) -> list[float]:
    """A normal client's /healthz answers meanwhile: each one's time, in seconds."""
    took = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        deadline = time.monotonic() + for_s
        while time.monotonic() < deadline:
            started = time.monotonic()
            assert (await http.get("/healthz")).status_code == 200
            took.append(time.monotonic() - started)
            await asyncio.sleep(0.2)
    return took


def test_slow_headers_and_slow_bodies_are_cut_off_while_a_normal_client_is_answered(server):
    port = server["port"]

    async def scenario():
        slow = [slow_head(port) for _ in range(3)] + [slow_body(port) for _ in range(3)]
        return await asyncio.gather(prompt_answers(port, READ_TIMEOUT_S + 1),
                                    *(client.run() for client in slow))

    took, *slow = asyncio.run(scenario())
    for client in slow:
        assert client.closed_after_s is not None, "never closed"
        # At a byte per 0.3 s the whole request would take 20 s or more.
        assert READ_TIMEOUT_S - 0.1 <= client.closed_after_s <= READ_TIMEOUT_S + MARGIN_S, \
            client.closed_after_s
        assert client.answer.startswith(b"HTTP/1.1 408 Request Timeout"), client.answer
    assert len(took) >= 5 and max(took) < PROMPT_S, took


def test_a_connection_that_sends_nothing_is_closed(server):
    from api.serve import KEEP_ALIVE_S

    with socket.create_connection(("127.0.0.1", server["port"])) as sock:
        sock.settimeout(KEEP_ALIVE_S + 5)
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed without a word: no request to answer
        assert time.monotonic() - started <= KEEP_ALIVE_S + MARGIN_S


def test_past_the_concurrency_limit_the_excess_gets_503_at_once_not_a_wait(server):
    port = server["port"]
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(LIMIT)]
    try:
        time.sleep(0.2)  # accepted by the server
        started = time.monotonic()
        refused = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert refused.status_code == 503, refused.text
        assert time.monotonic() - started < PROMPT_S
    finally:
        for sock in held:
            sock.close()
    # The slots come back as soon as the connections close.
    deadline = time.monotonic() + 5
    while httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the server never took requests again"
        time.sleep(0.1)


PER_CLIENT = 3


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("percap")
    env = support.stack_env("e2e", "floodgate_percap", tmp,
                            API_MAX_CONNECTIONS_PER_CLIENT=PER_CLIENT, API_LIMIT_CONCURRENCY=50)
    with processes.serving_api(env, tmp) as (port, _):
        yield port


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))  # another loopback address: another client
    sock.connect(("127.0.0.1", port))
    return sock


def test_one_address_cannot_hold_more_than_its_connections_and_others_are_served(capped_server):
    port = capped_server
    held = [_connect(port, "127.0.0.2") for _ in range(PER_CLIENT)]  # idle, as a slowloris
    try:
        time.sleep(0.2)
        with _connect(port, "127.0.0.2") as extra:
            extra.settimeout(5)
            assert extra.recv(200).startswith(b"HTTP/1.1 429"), "the excess was not refused"
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"))
        with other:
            assert other.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5  # its places come back as its connections close
    mine = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with mine:
        while mine.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the address never got its places back"
            time.sleep(0.1)
