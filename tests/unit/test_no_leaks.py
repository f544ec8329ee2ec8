"""A 503 says what is down in words: no driver text, host, user or password (issue 19)."""
import pytest
from sqlalchemy import create_engine


DRIVER_WORDS = ("psycopg", "OperationalError", "127.0.0.1", "sekrit-user", "sekrit-pass",
                "connection", "Traceback")


@pytest.fixture
def user(client):
    import uuid

    made = client.post("/users", json={"name": f"leak-{uuid.uuid4().hex[:8]}"}).json()
    return {"Authorization": f"Bearer {made['api_key']}"}


def assert_words_only(response, what: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    detail = response.json()["detail"]
    assert what in detail
    for word in DRIVER_WORDS:
        assert word not in response.text, (word, response.text)


def test_a_database_that_is_down_is_named_without_its_driver_text(client, user, monkeypatch):
    from api import auth

    dead = create_engine("postgresql+psycopg://sekrit-user:sekrit-pass@127.0.0.1:1/db",
                         connect_args={"connect_timeout": 1})
    for module in ("api.routes.users", "api.auth"):
        monkeypatch.setattr(f"{module}.engine", lambda: dead)
    auth._entries().pop(user["Authorization"].split("_")[1], None)  # so it is read again
    assert_words_only(client.get("/keys", headers=user), "the database is unreachable")


def test_a_database_down_after_admission_is_named_without_its_driver_text(client, user,
                                                                         monkeypatch):
    """The async path's store: asyncpg lets a refused connection through as a bare OSError."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from config.settings import get_settings

    dead = create_async_engine("postgresql+asyncpg://sekrit-user:sekrit-pass@127.0.0.1:1/db")
    monkeypatch.setattr("tasks.demo.handoff_async.async_engine", lambda: dead)
    monkeypatch.setenv("API_SUBMIT_PATH", "async")
    get_settings.cache_clear()
    try:
        response = client.post("/posts", json={"text": "hi"}, headers=user)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert_words_only(response, "the database did not store job")


def test_a_broker_that_is_down_is_named_without_its_driver_text(client, user, monkeypatch,
                                                              submit_path):
    from kombu.exceptions import OperationalError

    def refuse(*_, **__):
        raise OperationalError("[Errno 111] Connection refused "
                               "to amqp://sekrit-user:sekrit-pass@127.0.0.1:5672//")

    # Where each path meets the broker: Celery's send_task, or the library's submit_async.
    if submit_path == "threads":
        monkeypatch.setattr("tasks.demo.submit.app.send_task", refuse)
    else:
        monkeypatch.setattr("tasks.demo.handoff_async.submit_async", refuse)
    response = client.post("/posts", json={"text": "hi"}, headers=user)
    assert_words_only(response, "the message broker is unreachable")
    assert response.json()["queue"] == "fanout"


@pytest.mark.parametrize("flag, served", [("true", True), ("false", False)])
def test_the_route_list_is_public_unless_turned_off(flag, served):
    import os
    import subprocess
    import sys

    probe = ("from fastapi.testclient import TestClient; from api.main import app; "
             "print(TestClient(app).get('/openapi.json').status_code)")
    done = subprocess.run([sys.executable, "-c", probe],
                          env={**os.environ, "API_PUBLIC_DOCS": flag},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip().splitlines()[-1] == ("200" if served else "404"), done.stderr
