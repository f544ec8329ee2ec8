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
    assert env["DATABASE_URL"].startswith("postgresql+psycopg://floodgate_app:")
    assert "@127.0.0.1:" in env["DATABASE_URL"]
    assert env["BROKER_URL"].startswith("redis://:") and "@127.0.0.1:" in env["BROKER_URL"]
    assert extras == ["broker: $FLOODGATE_BROKER_CMD"]
    assert env["WORKER_SEND_TASK_EVENTS"] == "true"
    again, _ = prepare_env({"FLOODGATE_VAR_DIR": str(tmp_path)})  # the password is kept
    assert again["DATABASE_URL"].split("@")[0] == env["DATABASE_URL"].split("@")[0]
    assert again["BROKER_URL"].split("@")[0] == env["BROKER_URL"].split("@")[0]

    mine = {"FLOODGATE_VAR_DIR": str(tmp_path), "BROKER_URL": "amqp://u:p@h//",
            "DATABASE_URL": "sqlite:///mine.db", "WORKER_SEND_TASK_EVENTS": "false"}
    env, extras = prepare_env(dict(mine))
    assert {k: env[k] for k in mine} == {**mine, "FLOODGATE_VAR_DIR": str(tmp_path.resolve())}
    assert extras == [] and "FLOODGATE_PG_PORT" not in env


# Secrets (issue 19): SecretStr, *_FILE, minimum lengths.

SECRET_URL = "amqp://fg:s3cret-pass@rabbit:5672//"


def test_urls_are_secret_in_every_printed_form(monkeypatch):
    s = settings_from(monkeypatch, BROKER_URL=SECRET_URL, DATABASE_URL="sqlite:///x",
                      RESULT_BACKEND="redis://:r3dis-pass@redis:6379/0")
    for shown in (repr(s), str(s), str(s.model_dump()), repr(s.broker_url)):
        assert "s3cret-pass" not in shown and "r3dis-pass" not in shown
    assert s.broker == SECRET_URL  # the plain value is there for connecting


def test_a_bad_url_is_named_without_echoing_it(monkeypatch):
    sentence = error_sentence(monkeypatch, BROKER_URL="pass-word-only", DATABASE_URL="sqlite:///x")
    assert "BROKER_URL is not a URL" in sentence and "pass-word-only" not in sentence


def test_a_secret_is_read_from_its_file_variable(monkeypatch, tmp_path):
    (tmp_path / "broker").write_text(SECRET_URL + "\n")
    (tmp_path / "ops").write_text("o" * 10 + "PQRSTUVWXYZabcdefghij\n")
    monkeypatch.setenv("BROKER_URL_FILE", str(tmp_path / "broker"))
    monkeypatch.setenv("OPS_TOKEN_FILE", str(tmp_path / "ops"))
    monkeypatch.delenv("OPS_TOKEN", raising=False)  # the variable itself wins over its file
    s = settings_from(monkeypatch, DATABASE_URL="sqlite:///x", RESULT_BACKEND="redis://r")
    assert s.broker == SECRET_URL
    assert s.ops_token.get_secret_value() == "o" * 10 + "PQRSTUVWXYZabcdefghij"


def test_an_unreadable_secret_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "missing"))
    sentence = error_sentence(monkeypatch, BROKER_URL="redis://h")
    assert "DATABASE_URL_FILE" in sentence and "cannot be read" in sentence


def test_a_short_flower_password_is_refused(monkeypatch):
    sentence = error_sentence(monkeypatch, BROKER_URL="redis://h", DATABASE_URL="sqlite:///x",
                              FLOWER_BASIC_AUTH="admin:short-pw")
    assert "FLOWER_BASIC_AUTH" in sentence and "at least 12" in sentence


@pytest.mark.parametrize("name", ["API_KEY_SECRET", "OPS_TOKEN"])
@pytest.mark.parametrize("value", ["changeme", "x" * 40, "abc123"])
def test_weak_api_secrets_are_refused(monkeypatch, name, value):
    sentence = error_sentence(monkeypatch, BROKER_URL="redis://h", DATABASE_URL="sqlite:///x",
                              **{name: value})
    assert name in sentence and "random characters" in sentence


def test_the_api_refuses_to_start_without_its_secrets(monkeypatch):
    monkeypatch.delenv("API_KEY_SECRET", raising=False)
    monkeypatch.delenv("OPS_TOKEN", raising=False)
    s = settings_from(monkeypatch, BROKER_URL="redis://h", DATABASE_URL="sqlite:///x")
    with pytest.raises(ConfigError, match="API_KEY_SECRET and OPS_TOKEN are required"):
        s.require_api_secrets()


def test_a_malformed_rate_is_named(monkeypatch):
    sentence = error_sentence(monkeypatch, BROKER_URL="redis://h", DATABASE_URL="sqlite:///x",
                              RATE_LIMIT_SIGNUPS="lots")
    assert "RATE_LIMIT_SIGNUPS" in sentence and "'20/minute'" in sentence
