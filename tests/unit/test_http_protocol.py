"""api/http_protocol.py: slow-header and slow-body requests are cut off, on a fake
transport (no socket). If an upgrade of uvicorn renames what the protocol hooks, the
first test says which name went missing, and the others fail."""
from __future__ import annotations

import asyncio
import functools
import inspect

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from api.http_protocol import DeadlineHttpToolsProtocol

READ_TIMEOUT_S = 0.2
KEEP_ALIVE_S = 0.3


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default)

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def answer_ok(scope, receive, send) -> None:
    """Reads the whole body, then answers 200 with how many bytes it got."""
    body, seen = b"", {"type": "http.request", "more_body": True}
    while seen["type"] == "http.request" and seen.get("more_body"):
        seen = await receive()
        body += seen.get("body", b"")
    if seen["type"] == "http.disconnect":
        answer_ok.disconnected = True
        return
    text = str(len(body)).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(text)).encode())]})
    await send({"type": "http.response.body", "body": text})


async def stream_at_once(scope, receive, send) -> None:
    """Starts a streaming answer without reading the body, and never ends it."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"x", "more_body": True})
    await asyncio.sleep(60)


def connect(app, max_head_bytes: int = 1024) -> tuple[DeadlineHttpToolsProtocol, FakeTransport]:
    config = Config(app=app, ws="none", lifespan="off", log_config=None,
                    timeout_keep_alive=KEEP_ALIVE_S,  # type: ignore[arg-type]
                    http=functools.partial(DeadlineHttpToolsProtocol,  # type: ignore[arg-type]
                                           read_timeout_s=READ_TIMEOUT_S,
                                           max_head_bytes=max_head_bytes))
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(),
                                          app_state={})
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


def run(test):
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 10))
    return wrapper


def test_what_the_protocol_hooks_still_exists_in_uvicorn():
    hooked = ["connection_made", "connection_lost", "data_received", "on_message_begin",
              "on_headers_complete", "on_message_complete", "timeout_keep_alive_handler"]
    missing = [name for name in hooked if not callable(getattr(HttpToolsProtocol, name, None))]
    assert not missing, f"uvicorn's HttpToolsProtocol no longer has {missing}"
    assert list(inspect.signature(HttpToolsProtocol.__init__).parameters)[1:4] == [
        "config", "server_state", "app_state"]
    cycle = inspect.signature(RequestResponseCycle.__init__).parameters
    assert "message_event" in cycle
    source = inspect.getsource(RequestResponseCycle)
    for attribute in ("more_body", "response_started", "response_complete", "disconnected"):
        assert f"self.{attribute} =" in source, f"RequestResponseCycle lost {attribute}"
    protocol, _ = asyncio.run(_connected())
    for attribute in ("cycle", "pipeline", "transport", "loop", "timeout_keep_alive",
                      "timeout_keep_alive_task"):
        assert hasattr(protocol, attribute), f"HttpToolsProtocol lost {attribute}"


async def _connected():
    protocol, transport = connect(answer_ok)
    protocol.connection_lost(None)
    return protocol, transport


@run
async def test_a_head_sent_a_byte_at_a_time_gets_408_at_the_deadline_from_its_first_byte():
    protocol, transport = connect(answer_ok)
    started = asyncio.get_running_loop().time()
    for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: yes":
        if transport.closed:
            break
        protocol.data_received(bytes([byte]))
        await asyncio.sleep(0.02)
    elapsed = asyncio.get_running_loop().time() - started
    assert transport.closed and transport.written.startswith(b"HTTP/1.1 408 Request Timeout")
    assert READ_TIMEOUT_S <= elapsed < READ_TIMEOUT_S + 0.15
    assert b"within 0.2 s" in transport.written
    protocol.connection_lost(None)


@run
async def test_a_slow_body_gets_408_and_the_app_waiting_for_it_sees_a_disconnect():
    answer_ok.disconnected = False
    protocol, transport = connect(answer_ok)
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    await asyncio.sleep(READ_TIMEOUT_S + 0.1)
    assert transport.closed and transport.written.startswith(b"HTTP/1.1 408")
    protocol.connection_lost(None)
    await asyncio.sleep(0.01)
    assert answer_ok.disconnected


@run
async def test_whole_requests_are_answered_and_each_one_gets_its_own_deadline():
    protocol, transport = connect(answer_ok)
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    await asyncio.sleep(READ_TIMEOUT_S + 0.05)  # answered; past the first request's deadline
    assert not transport.closed and transport.written.startswith(b"HTTP/1.1 200 OK")
    assert transport.written.endswith(b"\r\n\r\n3")
    protocol.data_received(b"GET / HTTP/1.1\r\n")  # a second request, left incomplete
    await asyncio.sleep(READ_TIMEOUT_S + 0.05)
    assert transport.closed and b"HTTP/1.1 408" in transport.written
    protocol.connection_lost(None)


@run
async def test_a_request_begun_late_is_timed_from_its_own_first_byte_not_the_connections():
    protocol, transport = connect(answer_ok)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(READ_TIMEOUT_S * 0.75)
    protocol.data_received(b"GET / HTTP/1.1\r\n")  # begun just before the first's deadline
    await asyncio.sleep(READ_TIMEOUT_S * 0.5)       # past the first's, within its own
    protocol.data_received(b"Host: x\r\n\r\n")
    await asyncio.sleep(0.02)
    assert not transport.closed and transport.written.count(b"HTTP/1.1 200 OK") == 2
    protocol.connection_lost(None)


@run
async def test_a_body_still_trickling_after_the_answer_began_is_cut_without_a_second_status():
    protocol, transport = connect(stream_at_once)
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n1")
    await asyncio.sleep(READ_TIMEOUT_S + 0.05)
    assert transport.closed
    assert transport.written.count(b"HTTP/1.1") == 1 and b"408" not in transport.written
    protocol.connection_lost(None)


@run
async def test_a_head_over_the_bound_gets_431():
    protocol, transport = connect(answer_ok, max_head_bytes=1024)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
    for i in range(20):
        if transport.closed:
            break
        protocol.data_received(b"X-Pad-%d: %s\r\n" % (i, b"a" * 100))
    assert transport.closed
    assert transport.written.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    protocol.connection_lost(None)


@run
async def test_a_head_under_the_bound_with_a_large_body_is_answered():
    protocol, transport = connect(answer_ok, max_head_bytes=1024)
    body = b"b" * 5000
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + body)
    await asyncio.sleep(0.05)
    assert transport.written.startswith(b"HTTP/1.1 200") and transport.written.endswith(b"5000")
    protocol.connection_lost(None)


@run
async def test_a_connection_that_sends_nothing_is_closed_after_the_keep_alive_timeout():
    protocol, transport = connect(answer_ok)
    await asyncio.sleep(KEEP_ALIVE_S - 0.1)
    assert not transport.closed
    await asyncio.sleep(0.2)
    assert transport.closed and transport.written == b""
    protocol.connection_lost(None)


@pytest.mark.parametrize("read_timeout_s", [0.5, 30])
def test_serve_passes_the_settings_to_uvicorn_and_the_protocol_pickles(read_timeout_s):
    import pickle

    from api import serve
    from config.settings import Settings

    settings = Settings(broker_url="memory://", database_url="sqlite://",
                        request_read_timeout_s=read_timeout_s, api_limit_concurrency=77,
                        api_port=8123)
    options = serve.uvicorn_options(settings, serve.parse_args(["--workers", "3"]))
    assert options["limit_concurrency"] == 77 and options["workers"] == 3
    assert options["port"] == 8123 and options["access_log"] is False
    protocol = pickle.loads(pickle.dumps(options["http"]))  # uvicorn --workers pickles it
    assert protocol.func is DeadlineHttpToolsProtocol
    assert protocol.keywords["read_timeout_s"] == read_timeout_s


def test_forwarded_headers_are_trusted_only_from_the_named_proxies(monkeypatch):
    from api import serve

    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert serve.proxy_options() == {"proxy_headers": False, "forwarded_allow_ips": None}
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.7")
    assert serve.proxy_options() == {"proxy_headers": True, "forwarded_allow_ips": "10.0.0.7"}
