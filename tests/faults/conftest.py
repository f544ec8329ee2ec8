"""Fault tests (FAULTS.md rows 4-7 and 11): private brokers, Floodgate as subprocesses.

Every test that stops, kills or blocks a broker does it to a broker of its own
(tests/faults/brokers.py): a redis-server or a RabbitMQ node on free ports with
its own node name, data directory and Erlang cookie, signalled by PID. The shared
servers only hold what this suite owns: the result backend in Redis database 9
and, under TEST_DATABASE=postgresql, PostgreSQL databases ``floodgate_fault_*``.

The suite runs in both integration passes. A test written for one broker is
skipped in the other pass; a test for "both brokers" runs once per pass, on the
pass's broker (FLOODGATE_TEST_BROKER), so nothing runs twice.
"""
from __future__ import annotations

import os
import re
import uuid

import pytest
import redis

from tests import support
from tests.faults.brokers import Broker, PrivateRabbit, PrivateRedis
from tests.faults.harness import RESULTS_URL, System

VHOST_STOCK = 12  # more than the RabbitMQ tests of one session
# The API's secrets, random per session; tests read them from os.environ (System passes
# the same values to the API it starts).
os.environ.update(support.api_env())


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session", autouse=True)
def _results_db():
    redis.Redis.from_url(RESULTS_URL).flushdb()


# -- brokers ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def rabbit_node(tmp_path_factory):
    """One private RabbitMQ node for the whole session (it takes seconds to boot), with a
    stock of vhosts made in one rabbitmqctl call: each test takes a fresh one (``rabbit``).

    Tests may kill, stop or block the node; the ``rabbit`` fixture brings it back.
    """
    node = PrivateRabbit(tmp_path_factory.mktemp("rabbit"))
    try:
        node.start()
        node.spare_vhosts = [f"fg_fault_{i}" for i in range(VHOST_STOCK)]
        node.add_vhosts(*node.spare_vhosts)
        yield node
    finally:
        node.close()


@pytest.fixture
def rabbit(rabbit_node):
    """The session's RabbitMQ node, running and unblocked, with a fresh vhost for this test.

    The node is private and thrown away with the session, so used vhosts are left as is.
    """
    if not rabbit_node.running:
        rabbit_node.start()
    if rabbit_node.app_stopped:
        rabbit_node.start_app()
    if rabbit_node.blocked:
        rabbit_node.unblock()
    if not rabbit_node.spare_vhosts:
        rabbit_node.spare_vhosts = [f"fg_fault_{uuid.uuid4().hex[:8]}_{i}" for i in range(4)]
        rabbit_node.add_vhosts(*rabbit_node.spare_vhosts)
    return Broker(rabbit_node, rabbit_node.spare_vhosts.pop(0))


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own, with the documented persistence (AOF everysec)."""
    server = PrivateRedis(tmp_path)
    try:
        server.start()
        yield Broker(server)
    finally:
        server.close()


@pytest.fixture
def broker(request):
    """The private broker of this pass's kind (for rows that hold on both brokers)."""
    name = "rabbit" if support.broker_kind() == "amqp" else "private_redis"
    return request.getfixturevalue(name)


# -- Floodgate --------------------------------------------------------------------------------
@pytest.fixture
def floodgate(tmp_path, request):
    """Make Floodgate systems on a broker: ``floodgate(broker_url, **settings)``.

    Stops every part they started, even on failure, and prints the parts' logs when
    the test failed.
    """
    systems: list[System] = []

    def make(broker_url: str, **settings) -> System:
        db_name = ("floodgate_fault_" + re.sub(r"\W", "_", request.node.name)[:30].lower()
                   + f"_{len(systems)}")
        system = System(tmp_path, broker_url, db_name, **settings)
        systems.append(system)
        return system

    yield make
    report = getattr(request.node, "rep_call", None)
    for system in systems:
        system.stop()
        if report is not None and report.failed:
            for part in system.parts:
                log = part.log_path.read_text(errors="replace").splitlines()
                print(f"----- {part.name} log, last 60 lines -----", *log[-60:], sep="\n")
