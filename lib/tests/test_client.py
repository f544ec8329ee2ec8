"""The client helpers (extra ``client``): retry refusals, never sooner than the refusal
asks, within bounded attempts and time. Sleeps are injected and recorded."""
from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_floodgate import BrokerUnavailable, NotInstalled, QueueFull

httpx = pytest.importorskip("httpx", reason="the 'client' extra is not installed")
client = pytest.importorskip("celery_floodgate.client",
                             reason="the 'client' extra is not installed")
call_with_backoff, post_with_backoff = client.call_with_backoff, client.post_with_backoff
Throttle = client.Throttle
from celery_floodgate.throttle import THROTTLES  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_throttles() -> Iterator[None]:
    """Each test starts with no destination's history in the default registry."""
    THROTTLES.clear()
    yield
    THROTTLES.clear()


class Refuser:
    """Refuses with the given errors, in turn, then admits."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "admitted"


def full(retry_after_s: int) -> QueueFull:
    return QueueFull("bounded", 20, 20, retry_after_s)


@settings(max_examples=60)
@given(hints=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=5),
       jitter=st.floats(min_value=0, max_value=1))
def test_each_retry_waits_at_least_what_the_refusal_asked_and_at_most_its_jitter_more(
        hints, jitter) -> None:
    waits: list[float] = []
    fn = Refuser(*map(full, hints))
    assert call_with_backoff(fn, max_attempts=10, max_total_s=3600, base_s=0.001, cap_s=0.001,
                             hint_jitter=jitter, sleep=waits.append) == "admitted"
    assert fn.calls == len(hints) + 1
    assert len(waits) == len(hints)
    for wait, hint in zip(waits, hints):
        assert hint <= wait <= hint * (1 + jitter) + 1e-9


def test_attempts_are_bounded_and_the_last_refusal_is_raised() -> None:
    waits: list[float] = []
    fn = Refuser(*(full(1) for _ in range(10)), full(9))
    with pytest.raises(QueueFull) as refused:
        call_with_backoff(fn, max_attempts=4, sleep=waits.append)
    assert fn.calls == 4 and len(waits) == 3
    assert refused.value.retry_after_s == 1  # the fourth refusal, not a later one


def test_a_hint_past_the_total_bound_gives_up_at_once_instead_of_oversleeping() -> None:
    waits: list[float] = []
    fn = Refuser(full(60))
    with pytest.raises(QueueFull):
        call_with_backoff(fn, max_total_s=30, sleep=waits.append)
    assert waits == [] and fn.calls == 1


def test_a_broker_outage_is_retried_as_it_asks() -> None:
    waits: list[float] = []
    fn = Refuser(BrokerUnavailable("bounded", "ConnectionRefusedError", retry_after_s=3))
    assert call_with_backoff(fn, hint_jitter=0, sleep=waits.append) == "admitted"
    assert waits == [3]


@pytest.mark.parametrize("error", [ValueError("bad argument"), NotInstalled("no limits"),
                                   ConnectionError("not ours to retry")])
def test_other_errors_are_raised_at_once(error) -> None:
    waits: list[float] = []
    fn = Refuser(error)
    with pytest.raises(type(error)):
        call_with_backoff(fn, sleep=waits.append)
    assert fn.calls == 1 and waits == []


def test_without_a_hint_backoff_is_exponential_with_full_jitter_under_its_cap() -> None:
    waits: list[float] = []
    no_hint = [QueueFull("bounded", 20, 20, 0) for _ in range(8)]
    call_with_backoff(Refuser(*no_hint), max_attempts=10, base_s=0.01, cap_s=0.05,
                      sleep=waits.append)
    assert len(waits) == 8
    caps = [min(0.05, 0.01 * 2 ** i) for i in range(8)]
    assert all(0 <= wait <= cap for wait, cap in zip(waits, caps))
    assert len(set(waits)) > 1  # jittered, not one constant


# --- throttling itself: per destination, a refusal made here costs no call ---------------

class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def always_refusing() -> Refuser:
    return Refuser(*(QueueFull("bounded", 20, 20, 4, reason="share", tenant="acme")
                     for _ in range(1000)))


def test_a_queue_that_keeps_refusing_is_refused_here_without_a_call() -> None:
    clock = Clock()
    gate = Throttle(clock=clock, rng=lambda: 0.0)  # refuses whenever p > 0
    fn, raised = always_refusing(), []
    for _ in range(40):
        with pytest.raises(QueueFull) as refused:
            call_with_backoff(fn, max_attempts=1, throttle=gate, destination="bounded")
        raised.append(refused.value)
    assert fn.calls == 20  # the throttle's floor; then p = 20/21 and up
    local = raised[20:]
    assert all(isinstance(e, client.QueueFullLocally) for e in local)
    assert not any(isinstance(e, client.ThrottledLocally) for e in raised[:20])
    assert (local[0].queue, local[0].depth, local[0].limit, local[0].reason,
            local[0].tenant) == ("bounded", 20, 20, "share", "acme")
    assert local[0].retry_after_s == 4  # the server's last hint, none of it spent yet
    assert str(local[0]).startswith("not sent: queue 'bounded' refused most of this client")
    assert "throttle=None" in str(local[0])
    assert gate.counts().attempts == 40 and gate.counts().sent == 20


def test_a_local_refusal_survives_pickling_whole() -> None:
    refusal = client.QueueFullLocally("bounded", 20, 20, 3, "class", None, "sheddable")
    again = pickle.loads(pickle.dumps(refusal))
    assert type(again) is client.QueueFullLocally
    assert (again.queue, again.retry_after_s, again.criticality) == ("bounded", 3, "sheddable")
    assert str(again) == str(refusal)


def test_a_local_refusal_is_retried_after_what_remains_of_the_servers_hint() -> None:
    clock = Clock()
    gate = Throttle(clock=clock, rng=lambda: 0.0)
    for _ in range(20):
        gate.decide()
        gate.record(False, retry_after_s=10)
    clock.now_s += 3
    waits: list[float] = []
    fn = Refuser()  # would admit at once, but is never asked
    with pytest.raises(client.QueueFullLocally):
        call_with_backoff(fn, max_attempts=3, hint_jitter=0, throttle=gate,
                          destination="bounded", sleep=waits.append)
    assert fn.calls == 0 and waits == [7, 7]


def test_a_retry_past_the_budget_is_not_made_and_the_servers_refusal_is_raised() -> None:
    gate = Throttle(retry_ratio=0, retry_allowance=2, rng=lambda: 1.0)
    fn, waits = always_refusing(), []
    with pytest.raises(QueueFull) as refused:
        call_with_backoff(fn, max_attempts=6, throttle=gate, destination="bounded",
                          sleep=waits.append)
    assert fn.calls == 3 and len(waits) == 2  # the first try and the two retries allowed
    assert not isinstance(refused.value, client.ThrottledLocally)
    assert any("retry budget" in note for note in refused.value.__notes__)
    assert gate.counts().retries == 2


def test_a_named_destination_uses_the_default_registry_unless_told_none() -> None:
    fn = Refuser(full(1))
    call_with_backoff(fn, destination="bounded", sleep=lambda s: None)
    assert THROTTLES.get("bounded").counts() == (2, 1, 2, 1)  # attempts, accepts, sent, retries
    call_with_backoff(Refuser(full(1)), destination="emails", throttle=None,
                      sleep=lambda s: None)
    call_with_backoff(Refuser(full(1)), sleep=lambda s: None)  # no destination: none to count
    assert "emails" not in THROTTLES and len(THROTTLES) == 1


def test_an_error_that_is_not_back_pressure_counts_as_accepted() -> None:
    gate = Throttle()
    with pytest.raises(ValueError):
        call_with_backoff(Refuser(ValueError("bad argument")), throttle=gate)
    assert gate.counts().accepts == 1


# --- HTTP: a tiny local server answering 503 with Retry-After, then 202 -------------------

class Busy(BaseHTTPRequestHandler):
    """Answers the queued statuses in turn (then 202) and records each request's body."""

    answers: list[tuple[int, dict[str, str]]] = []
    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", 0))
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        status, headers = type(self).answers.pop(0) if type(self).answers else (202, {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[Busy]]]:
    handler = type("Handler", (Busy,), {"answers": [], "bodies": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_a_503_is_retried_after_the_servers_retry_after_then_the_answer_returns(server) -> None:
    url, handler = server
    handler.answers = [(503, {"Retry-After": "2"}), (503, {"Retry-After": "3"})]
    waits: list[float] = []
    with httpx.Client(base_url=url, timeout=10) as http:
        response = post_with_backoff(http, "/jobs", {"n": 1}, sleep=waits.append, hint_jitter=0.5)
    assert response.status_code == 202
    assert handler.bodies == [{"n": 1}] * 3
    assert len(waits) == 2 and 2 <= waits[0] <= 3 and 3 <= waits[1] <= 4.5


def test_the_last_503_is_returned_once_the_attempts_are_spent(server) -> None:
    url, handler = server
    handler.answers = [(503, {"Retry-After": "1"})] * 5
    waits: list[float] = []
    with httpx.Client(base_url=url, timeout=10) as http:
        response = post_with_backoff(http, "/jobs", {"n": 2}, max_attempts=3, sleep=waits.append)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert len(handler.bodies) == 3 and len(waits) == 2


@pytest.mark.parametrize("status", [200, 400, 422, 500])
def test_answers_other_than_503_return_at_once(status) -> None:
    calls: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status)

    waits: list[float] = []
    with httpx.Client(transport=httpx.MockTransport(answer), base_url="http://svc") as http:
        assert post_with_backoff(http, "/jobs", {}, sleep=waits.append).status_code == status
    assert len(calls) == 1 and waits == []


@pytest.mark.parametrize("header, least_s", [({}, 1.0), ({"Retry-After": "soon"}, 1.0),
                                             ({"Retry-After": "4"}, 4.0)])
def test_a_503_without_a_readable_retry_after_waits_one_second(header, least_s) -> None:
    answers = iter([httpx.Response(503, headers=header), httpx.Response(202)])
    waits: list[float] = []
    transport = httpx.MockTransport(lambda request: next(answers))
    with httpx.Client(transport=transport, base_url="http://svc") as http:
        response = post_with_backoff(http, "/jobs", {}, sleep=waits.append, hint_jitter=0)
    assert response.status_code == 202 and len(waits) == 1 and waits[0] >= least_s


def test_an_endpoint_answering_503_is_refused_here_without_a_request() -> None:
    requests: list[httpx.Request] = []

    def busy(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(503, headers={"Retry-After": "5"})

    gate = Throttle(rng=lambda: 0.0)
    with httpx.Client(transport=httpx.MockTransport(busy), base_url="http://svc") as http:
        for _ in range(30):
            response = post_with_backoff(http, "/jobs", {}, max_attempts=1, throttle=gate)
    assert len(requests) == 20 and gate.counts().attempts == 30
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    local = response.extensions["floodgate_throttled"]
    assert isinstance(local, client.ServerBusyLocally) and isinstance(local, client.ServerBusy)
    assert local.retry_after_s == 5
    assert str(local).startswith("not sent: http://svc/jobs answered 503 to most")


def test_an_http_destination_is_scheme_host_port_and_path_without_the_query() -> None:
    answers = iter([httpx.Response(503, headers={"Retry-After": "1"}), httpx.Response(202)])
    transport = httpx.MockTransport(lambda request: next(answers))
    with httpx.Client(transport=transport, base_url="https://svc/api") as http:
        assert client.destination_of(http, "/jobs?page=2") == "https://svc:443/api/jobs"
        post_with_backoff(http, "/jobs?page=2", {}, sleep=lambda s: None)
    assert client.destination_of(None, "http://svc:8000/jobs?x=1") == "http://svc:8000/jobs"
    assert THROTTLES.get("https://svc:443/api/jobs").counts() == (2, 1, 2, 1)


def test_a_request_that_fails_counts_without_an_accept_and_is_raised() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    gate = Throttle()
    with httpx.Client(transport=httpx.MockTransport(down), base_url="http://svc") as http:
        with pytest.raises(httpx.ConnectError):
            post_with_backoff(http, "/jobs", {}, throttle=gate)
    assert gate.counts() == (1, 0, 1, 0)


def test_post_with_backoff_without_a_throttle_sends_every_attempt() -> None:
    sent: list[httpx.Request] = []

    def busy(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(503, headers={"Retry-After": "1"})

    with httpx.Client(transport=httpx.MockTransport(busy), base_url="http://svc") as http:
        for _ in range(10):
            post_with_backoff(http, "/jobs", {}, max_attempts=5, throttle=None,
                              sleep=lambda s: None)
    assert len(sent) == 50 and len(THROTTLES) == 0


# --- against the plain project's real, full queue -------------------------------------------

def test_a_submission_refused_by_a_full_queue_is_admitted_once_a_slot_frees(project) -> None:
    """The sleep stands in for a worker: while the caller waits, one message is taken off."""
    for _ in range(20):
        project.slow.delay(0)
    told: list[int] = []
    waits: list[float] = []

    def submit():  # type: ignore[no-untyped-def]
        try:
            return project.slow.delay(0)
        except QueueFull as refused:
            told.append(refused.retry_after_s)
            raise

    def sleep_while_a_worker_takes_one(seconds: float) -> None:
        waits.append(seconds)
        with project.app.connection_for_write() as conn:
            assert project.app.amqp.queues["bounded"].bind(conn.default_channel).get(no_ack=True)

    result = call_with_backoff(submit, hint_jitter=0.1, sleep=sleep_while_a_worker_takes_one)
    assert result.id
    assert len(told) == 1 and len(waits) == 1
    assert told[0] <= waits[0] <= told[0] * 1.1 + 1e-9
