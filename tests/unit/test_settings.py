import os

import pytest

from config.queues import Limit, parse_queue_limits
from config.settings import ConfigError, Settings, _sentence


def settings_from(monkeypatch, **env):
    for key in ("BROKER_URL", "DATABASE_URL", "RESULT_BACKEND", "FLOWER_BASIC_AUTH",
                "QUEUE_LIMITS", "AGGREGATION_INTERVAL_S", "API_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def error_sentence(monkeypatch, **env) -> str:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        settings_from(monkeypatch, **env)
    return _sentence(info.value)


def test_a_missing_broker_url_is_named_in_one_sentence(monkeypatch):
    sentence = error_sentence(monkeypatch, DATABASE_URL="sqlite:///x.db")
    assert "BROKER_URL is required but not set" in sentence


def test_a_malformed_port_is_named(monkeypatch):
    sentence = error_sentence(monkeypatch, BROKER_URL="redis://h", DATABASE_URL="sqlite:///x",
                              API_PORT="eighty")
    assert "API_PORT" in sentence


def test_a_placeholder_flower_password_is_refused(monkeypatch):
    sentence = error_sentence(monkeypatch, BROKER_URL="redis://h", DATABASE_URL="sqlite:///x",
                              FLOWER_BASIC_AUTH="admin:changeme")
    assert "FLOWER_BASIC_AUTH" in sentence and "placeholder" in sentence


def test_a_malformed_queue_limit_fails_at_start(monkeypatch):
    sentence = error_sentence(monkeypatch, BROKER_URL="redis://h", DATABASE_URL="sqlite:///x",
                              QUEUE_LIMITS="fanout=lots")
    assert "QUEUE_LIMITS" in sentence and "'fanout'" in sentence and "'lots'" in sentence


def test_rabbitmq_without_a_result_backend_is_refused(monkeypatch):
    sentence = error_sentence(monkeypatch, BROKER_URL="amqp://u:p@h//", DATABASE_URL="sqlite:///x")
    assert "RESULT_BACKEND must be set" in sentence


def test_redis_broker_doubles_as_result_backend_and_meter(monkeypatch):
    s = settings_from(monkeypatch, BROKER_URL="redis://h:1/0", DATABASE_URL="sqlite:///x")
    assert s.result_backend_url == "redis://h:1/0"
    assert s.meter_redis_url == "redis://h:1/0"
    assert s.aggregation_interval_s == 60


def test_get_settings_raises_a_config_error_naming_the_variable(monkeypatch):
    from config import settings as module

    monkeypatch.delenv("BROKER_URL")
    module.get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match="BROKER_URL"):
            module.get_settings()
    finally:
        monkeypatch.undo()
        module.get_settings.cache_clear()


def test_limits_accept_lengths_and_waits_and_keep_defaults():
    limits = parse_queue_limits("fanout=5s, default=10")
    assert limits["fanout"] == Limit("fanout", wait_s=5.0)
    assert limits["default"] == Limit("default", length=10)
    assert limits["aggregation"].length == 100


@pytest.mark.parametrize("text, fragment", [
    ("fanout=0", "whole number"),
    ("fanout=1.5", "whole number"),
    ("nosuch=5", "unknown queue"),
    ("fanout=0s", "between 0 and 3600"),
    ("fanout", "queue=length"),
])
def test_bad_limits_say_what_is_wrong(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_queue_limits(text)


def test_task_events_are_off_unless_asked_for(monkeypatch):
    assert settings_from(monkeypatch, BROKER_URL="redis://h", DATABASE_URL="sqlite:///x"
                         ).worker_send_task_events is False
    assert settings_from(monkeypatch, BROKER_URL="redis://h", DATABASE_URL="sqlite:///x",
                         WORKER_SEND_TASK_EVENTS="true").worker_send_task_events is True
    assert "WORKER_SEND_TASK_EVENTS" in error_sentence(
        monkeypatch, BROKER_URL="redis://h", DATABASE_URL="sqlite:///x",
        WORKER_SEND_TASK_EVENTS="sometimes")


def test_worker_send_task_events_reaches_the_celery_config():
    import subprocess
    import sys

    probe = "from config import app; print(app.conf.worker_send_task_events)"
    for value in ("true", "false"):
        env = {**os.environ, "WORKER_SEND_TASK_EVENTS": value}
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.stdout.strip() == value.title(), done.stderr


def test_make_up_embeds_what_is_unset_keeps_what_is_set_and_turns_events_on(tmp_path):
    from config.up import prepare_env

    env, extras = prepare_env({"FLOODGATE_VAR_DIR": str(tmp_path)})
    assert env["DATABASE_URL"].startswith("postgresql+psycopg://floodgate:")
    assert "@127.0.0.1:" in env["DATABASE_URL"]
    assert env["BROKER_URL"].startswith("redis://127.0.0.1:")
    assert extras == ["broker: $FLOODGATE_BROKER_CMD"]
    assert env["WORKER_SEND_TASK_EVENTS"] == "true"
    again, _ = prepare_env({"FLOODGATE_VAR_DIR": str(tmp_path)})  # the password is kept
    assert again["DATABASE_URL"].split("@")[0] == env["DATABASE_URL"].split("@")[0]

    mine = {"FLOODGATE_VAR_DIR": str(tmp_path), "BROKER_URL": "amqp://u:p@h//",
            "DATABASE_URL": "sqlite:///mine.db", "WORKER_SEND_TASK_EVENTS": "false"}
    env, extras = prepare_env(dict(mine))
    assert {k: env[k] for k in mine} == {**mine, "FLOODGATE_VAR_DIR": str(tmp_path.resolve())}
    assert extras == [] and "FLOODGATE_PG_PORT" not in env
