"""A process of the same app that does not call install(): on RabbitMQ its declaration of a
bounded queue is refused (406), and passive_queues() lets it publish and consume anyway."""
from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from amqp.exceptions import PreconditionFailed
from celery import Celery

from celery_floodgate import passive_queues
from conftest import PROJECT, VHOST, broker_kind, project_env

pytestmark = pytest.mark.skipif(
    broker_kind() != "amqp",
    reason="RabbitMQ only: on Redis a queue has no arguments, so no declaration conflicts")


def plain_app() -> Celery:
    """The project's app as a process that never calls install() builds it."""
    app = Celery("tasks", set_as_current=False)
    app.config_from_object("config")
    return app


@pytest.fixture
def passive_worker(start_worker: Any) -> Any:
    """A worker of the plain app, with passive_queues(), as a real subprocess."""
    return lambda: start_worker(queues="bounded", concurrency=1, module="passive",
                                LIB_TEST_PASSIVE="1")


def queue_arguments(name: str) -> str:
    listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", VHOST, "name",
                             "arguments"], check=True, capture_output=True, text=True).stdout
    return next(line for line in listed.splitlines() if line.split()[:1] == [name])


def test_a_process_without_install_cannot_declare_the_bounded_queue(project: Any) -> None:
    project.add.delay(1, 2)  # the installed app declares 'bounded' with x-max-length 20
    plain = plain_app()
    try:
        with pytest.raises(PreconditionFailed) as refused:
            plain.send_task("tasks.add", (2, 3))
        assert "inequivalent arg 'x-max-length'" in str(refused.value)
    finally:
        plain.close()


def test_a_worker_without_install_stops_at_start(project: Any) -> None:
    project.add.delay(1, 2)
    worker = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "passive", "worker", "-P", "threads", "-c", "1",
         "-Q", "bounded", "--without-mingle", "--without-gossip", "-l", "warning"],
        cwd=PROJECT, env=project_env(LIB_TEST_PASSIVE="0"), capture_output=True, text=True,
        timeout=90)
    assert "Unrecoverable error: PreconditionFailed(406" in worker.stderr
    assert "inequivalent arg 'x-max-length'" in worker.stderr


def test_passive_queues_publish_and_consume_without_declaring(project: Any,
                                                              passive_worker: Any) -> None:
    installed = project.add.delay(1, 2)
    plain = plain_app()
    queues = passive_queues(plain, ["bounded"])
    try:
        assert [q.no_declare for q in queues if q.name == "bounded"] == [True]
        sent = plain.send_task("tasks.add", (2, 3))
        assert "x-max-length" in queue_arguments("bounded")  # still the installed app's
        passive_worker()
        assert sent.get(timeout=60) == 5
        assert installed.get(timeout=60) == 3
    finally:
        plain.close()
