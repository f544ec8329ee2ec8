"""Every broker URL kombu accepts for Redis, RabbitMQ and SQS is guarded; any other is
refused at install() unless the app opts out by name.

Live rows: the suite's broker (FLOODGATE_TEST_BROKER) behind a failover list, and
PRIVATE redis-servers on free loopback ports (Sentinel, TLS, unix socket), each
killed by its PID at the end.
"""
from __future__ import annotations

import logging
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.sentinel
from celery import Celery
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.transport import TRANSPORT_ALIASES

from celery_floodgate import NotInstalled, QueueFull, install
from celery_floodgate.transports.urls import AMQP, AMQPS, GUARDED, REDIS, SENTINEL, SQS

from conftest import broker_kind, broker_url, meter_url, reset_broker, wait_for

LIMITS = {"bounded": 20, "celery": 1000}
MASTER = "fgmaster"


def slow(seconds: float) -> float:
    return seconds


def shop(broker: Any, **conf: Any) -> Celery:
    """An app routing ``shop.slow`` to the queue ``bounded``."""
    app = Celery("shop", broker=broker, set_as_current=False)
    app.conf.update(task_routes={"shop.slow": {"queue": "bounded"}},
                    task_default_queue="celery", **conf)
    app.task(name="shop.slow")(slow)  # one callable for every app: no duplicate-name warning
    return app


def fill_then_refuse(app: Celery) -> QueueFull:
    """Submit 20 to the queue limited to 20, then the 21st: its refusal."""
    slow = app.tasks["shop.slow"]
    for _ in range(20):
        slow.delay(0)
    with pytest.raises(QueueFull) as refused:
        slow.delay(0)
    return refused.value


# --- which transport install() sets for each URL form (no server needed) --------

URL_FORMS = [
    ("redis://127.0.0.1:6379/8", {}, REDIS),
    ("rediss://127.0.0.1:6380/0?ssl_cert_reqs=none", {}, REDIS),
    ("redis+socket:///tmp/floodgate-none.sock", {}, REDIS),
    ("sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380",
     {"broker_transport_options": {"master_name": MASTER}}, SENTINEL),
    ("amqp://guest:guest@127.0.0.1:5672//", {}, AMQP),
    ("pyamqp://guest:guest@127.0.0.1:5672//", {}, AMQP),
    ("amqps://guest:guest@127.0.0.1:5671//", {}, AMQPS),
    ("amqp://guest@127.0.0.1:1//;amqp://guest@127.0.0.1:2//", {}, AMQP),
    (["redis://127.0.0.1:1/8", "redis://127.0.0.1:2/8"], {}, REDIS),
]


@pytest.mark.parametrize(("url", "conf", "transport"), URL_FORMS, ids=str)
def test_each_url_form_gets_its_guarded_transport_and_keeps_it_on_failover(
        url: Any, conf: dict[str, Any], transport: str) -> None:
    app = shop(url, **conf)
    install(app, LIMITS, meter_url="redis://127.0.0.1:1/0")
    assert app.conf.broker_transport == transport
    connection = app.connection_for_write()
    assert connection.transport_cls == transport
    connection.maybe_switch_next()  # kombu's failover: the next URL, its scheme's transport
    assert connection.transport_cls == transport
    app.close()


def test_sqs_gets_the_guarded_sqs_transport() -> None:
    app = shop("sqs://")
    install(app, LIMITS, meter_url="redis://127.0.0.1:1/0")
    assert app.conf.broker_transport == app.connection_for_write().transport_cls == SQS


def test_tls_settings_reach_the_guarded_connections() -> None:
    app = shop("rediss://127.0.0.1:6380/0")
    install(app, LIMITS)
    # kombu's default for rediss:// without TLS options: TLS, no certificate check
    assert app.connection_for_write().ssl == {"ssl_cert_reqs": ssl.CERT_NONE}
    app = shop("amqps://guest:guest@127.0.0.1//")
    install(app, LIMITS)
    assert app.connection_for_write().transport.client.ssl is True


def test_a_redis_socket_url_stays_guarded_in_the_producer_pool() -> None:
    app = shop("redis+socket:///tmp/floodgate-none.sock")
    install(app, LIMITS, meter_url="redis://127.0.0.1:1/0")
    pooled = app.amqp.producer_pool.connections.acquire()
    assert pooled.transport_cls == REDIS  # kombu's pool would have made it plain 'redis'
    pooled.release()


# --- brokers that cannot be guarded: refused, unless opted out by name -----------

UNGUARDABLE = sorted({s.lower() for s in TRANSPORT_ALIASES} - set(GUARDED)
                     - {"librabbitmq"}) + ["sqla+sqlite"]


@pytest.mark.parametrize("scheme", UNGUARDABLE)
def test_a_broker_that_cannot_be_guarded_is_refused_naming_it_and_the_opt_out(
        scheme: str) -> None:
    app = shop(f"{scheme}://localhost/x")
    with pytest.raises(NotInstalled) as refused:
        install(app, LIMITS)
    assert f"{scheme}://" in str(refused.value)
    assert f"allow_unguarded=({scheme!r},)" in str(refused.value)
    assert app.conf.broker_transport is None  # refused before changing anything


@settings(max_examples=50, deadline=None)
@given(st.from_regex(r"[a-z][a-z0-9]{1,9}", fullmatch=True).filter(lambda s: s not in GUARDED))
def test_any_unknown_scheme_is_refused(scheme: str) -> None:
    with pytest.raises(NotInstalled, match=f"the broker {scheme}:// cannot be guarded"):
        install(shop(f"{scheme}://host/0"), LIMITS)


def test_a_failover_list_of_two_kinds_is_refused() -> None:
    with pytest.raises(NotInstalled, match="mixes amqp and redis brokers"):
        install(shop("redis://127.0.0.1/0;amqp://127.0.0.1//"), LIMITS)


def test_sentinel_without_a_master_name_is_refused() -> None:
    with pytest.raises(NotInstalled, match="master_name"):
        install(shop("sentinel://127.0.0.1:26379"), LIMITS)


def test_the_opt_out_runs_unbounded_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    app = shop("memory://")
    with caplog.at_level(logging.WARNING, logger="celery_floodgate"):
        install(app, LIMITS, allow_unguarded=("memory",))
    assert "memory:// is not guarded" in caplog.text
    assert "every submission is accepted" in caplog.text
    for _ in range(21):  # nothing bounds the queue: the 21st is accepted too
        app.tasks["shop.slow"].delay(0)
    app.close()


# --- live: the limit holds on each URL form -------------------------------------

def test_the_limit_holds_through_a_failover_list_whose_first_broker_is_down() -> None:
    reset_broker()
    dead = ("redis://127.0.0.1:1/8" if broker_kind() == "redis"
            else "amqp://guest:guest@127.0.0.1:1/floodgate_lib")
    app = shop(f"{dead};{broker_url()}")
    install(app, LIMITS, meter_url=meter_url(), key_prefix="floodgate-lib-urls")
    refused = fill_then_refuse(app)
    assert (refused.queue, refused.limit) == ("bounded", 20)
    app.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def needs(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: no private server to test against")


def start(args: list[str], ready: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(ready, timeout_s=30)
    except AssertionError:
        proc.kill()
        raise
    return proc


def answers(client: redis.Redis) -> Any:
    def ping() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
    return ping


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait(timeout=30)


def private_redis(tmp_path: Path, *extra: str) -> list[str]:
    return ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", str(tmp_path), *extra]


def test_the_limit_holds_through_sentinel(tmp_path: Path, servers: list[Any]) -> None:
    needs("redis-server")
    port, sentinel_port = free_port(), free_port()
    master = redis.Redis(host="127.0.0.1", port=port)
    servers.append(start(private_redis(tmp_path, "--port", str(port)), answers(master)))
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor {MASTER} 127.0.0.1 {port} 1\n")
    # redis-py's own Sentinel client (a plain client's sentinel_* commands pass an option
    # that some redis-py releases' callbacks refuse).
    sentinel = redis.sentinel.Sentinel([("127.0.0.1", sentinel_port)], socket_timeout=1)

    def names_master() -> bool:
        try:
            return bool(sentinel.discover_master(MASTER))
        except redis.RedisError:
            return False

    servers.append(start(["redis-server", str(conf), "--sentinel"], names_master))
    # the first sentinel is down: the second names the master
    app = shop(f"sentinel://127.0.0.1:1;sentinel://127.0.0.1:{sentinel_port}",
               broker_transport_options={"master_name": MASTER})
    guard = install(app, LIMITS)
    assert app.conf.broker_transport == SENTINEL
    assert fill_then_refuse(app).limit == 20
    assert master.llen("bounded") == 20  # admitted on the master the sentinels name
    assert guard.meter.client is not None and guard.meter.client.ping()  # meter: the master
    app.close()


def test_the_limit_holds_over_tls(tmp_path: Path, servers: list[Any]) -> None:
    needs("redis-server", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    tls_client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert))
    servers.append(start(private_redis(
        tmp_path, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
        "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients",
        "no"), answers(tls_client)))
    forms: list[tuple[str, dict[str, Any]]] = [
        (f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}", {}),
        (f"rediss://127.0.0.1:{port}/1", {"broker_use_ssl": {
            "ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(cert)}}),
    ]
    for url, conf in forms:
        app = shop(url, **conf)
        guard = install(app, LIMITS)
        assert fill_then_refuse(app).limit == 20
        assert guard.meter.client is not None and guard.meter.client.ping()  # meter: over TLS
        app.close()
    assert tls_client.llen("bounded") == 20


def test_the_limit_holds_over_a_unix_socket(tmp_path: Path, servers: list[Any],
                                             request: pytest.FixtureRequest) -> None:
    needs("redis-server")
    # A socket's path has at most 107 bytes, and pytest's tmp_path under a nox session's
    # virtualenv is longer: the socket goes in a short directory of its own.
    short = Path(tempfile.mkdtemp(prefix="fg-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
    path = short / "redis.sock"
    client = redis.Redis(unix_socket_path=str(path))
    servers.append(start(private_redis(tmp_path, "--port", "0", "--unixsocket", str(path)),
                         answers(client)))
    app = shop(f"redis+socket://{path}")
    guard = install(app, LIMITS)
    assert fill_then_refuse(app).limit == 20
    assert client.llen("bounded") == 20
    assert guard.meter.client is not None and guard.meter.client.ping()
    app.close()

