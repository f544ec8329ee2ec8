"""Order of configuration: the guard holds whatever the order, or NotInstalled says why.

The plain project's ``config.py`` (on the suite's broker) is the configuration;
tasks are the project's names (``tasks.slow`` is routed to ``bounded``, limit 20).
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_floodgate import NotInstalled, QueueFull, install
from celery_floodgate.transports.urls import AMQP

from conftest import PROJECT, broker_kind, broker_url, project_env, reset_broker

LIMITS = {"bounded": 20, "celery": 1000}


def slow(seconds: float) -> float:
    return seconds


@pytest.fixture
def apps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Celery]]:
    """Apps made by the test, on an empty broker namespace, closed at the end."""
    reset_broker()
    for name, value in project_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(PROJECT))
    sys.modules.pop("config", None)
    made: list[Celery] = []
    yield made
    for app in made:
        app.close()
    sys.modules.pop("config", None)


def new_app(apps: list[Celery], **preconf: Any) -> Celery:
    app = Celery("order", set_as_current=False, **preconf)
    app.task(name="tasks.slow")(slow)
    apps.append(app)
    return app


def guard(app: Celery) -> None:
    install(app, LIMITS, meter_url=project_env()["LIB_TEST_METER_URL"],
            key_prefix="floodgate-lib-order")


def assert_21st_refused(app: Celery) -> None:
    task = app.tasks["tasks.slow"]
    for _ in range(20):
        task.delay(0)
    with pytest.raises(QueueFull) as refused:
        task.delay(0)
    assert (refused.value.queue, refused.value.limit) == ("bounded", 20)


def test_install_before_config_from_object_binds_when_the_configuration_loads(
        apps: list[Celery]) -> None:
    app = new_app(apps)
    guard(app)
    app.config_from_object("config")
    assert_21st_refused(app)


def test_install_after_config_from_object(apps: list[Celery]) -> None:
    app = new_app(apps)
    app.config_from_object("config")
    guard(app)
    assert_21st_refused(app)


def test_a_configuration_loaded_again_after_install_is_guarded_again(
        apps: list[Celery]) -> None:
    app = new_app(apps)
    app.config_from_object("config")
    guard(app)
    app.config_from_object("config")  # Celery reads it anew: what install() set is gone
    assert_21st_refused(app)


def test_the_same_broker_assigned_again_after_install_stays_guarded(apps: list[Celery]) -> None:
    app = new_app(apps)
    app.config_from_object("config")
    guard(app)
    app.conf.broker_url = broker_url().replace("127.0.0.1", "localhost")
    assert_21st_refused(app)


OTHER_KIND = {"redis": "amqp://guest:guest@127.0.0.1:5672//", "amqp": "redis://127.0.0.1:6379/8"}


@pytest.mark.parametrize(("setting", "value", "says"), [
    ("broker_url", OTHER_KIND[broker_kind()], "changed after install()"),
    ("broker_url", "memory://", "allow_unguarded=('memory',)"),
    ("broker_transport", "redis" if broker_kind() == "redis" else "amqp", "changed after install()"),
])
def test_a_broker_assigned_after_install_is_refused_not_used_unguarded(
        apps: list[Celery], setting: str, value: str, says: str) -> None:
    app = new_app(apps)
    app.config_from_object("config")
    guard(app)
    setattr(app.conf, setting, value)
    with pytest.raises(NotInstalled) as refused:
        app.tasks["tasks.slow"].delay(0)
    assert says in str(refused.value)
    assert "install()" in str(refused.value)


class MemoryConfig:
    broker_url = "memory://"
    task_routes = {"tasks.slow": {"queue": "bounded"}}


def test_a_configuration_loaded_again_with_an_unguardable_broker_is_refused(
        apps: list[Celery]) -> None:
    app = new_app(apps)
    app.config_from_object("config")
    guard(app)
    app.config_from_object(MemoryConfig)
    with pytest.raises(NotInstalled, match="the broker memory:// cannot be guarded"):
        app.tasks["tasks.slow"].delay(0)


def test_an_app_without_broker_url_is_guarded_as_celerys_default_amqp(
        apps: list[Celery]) -> None:
    app = new_app(apps)
    app.conf.update(task_routes={"tasks.slow": {"queue": "bounded"}})
    guard(app)
    assert app.conf.broker_url is None
    assert app.conf.broker_transport == AMQP
    assert app.connection_for_write().transport_cls == AMQP


def test_a_bare_app_never_configured_refuses_on_first_use(apps: list[Celery]) -> None:
    app = new_app(apps)
    guard(app)  # nothing to check yet: bound when the configuration loads
    with pytest.raises(NotInstalled, match="'bounded', which the app never routes to"):
        app.connection_for_write()
