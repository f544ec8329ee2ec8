"""The operations routes: /healthz is public and says only what is down; the detailed
check and /metrics need OPS_TOKEN."""
from __future__ import annotations

import os

import pytest

from api import health


def ops() -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['OPS_TOKEN']}"}


def runs(client, route: str) -> float:
    text = client.get("/metrics", headers=ops()).text
    line = next(l for l in text.splitlines()
                if l.startswith(f'floodgate_health_checks_total{{route="{route}"}}'))
    return float(line.rsplit(" ", 1)[1])


@pytest.fixture
def fresh_cache():
    """A health cache of the test's own: nothing cached by earlier tests, nothing left
    for later ones."""
    health.public_checks.cache_clear()
    yield
    health.public_checks.cache_clear()


def test_the_public_health_check_says_ok_and_nothing_else(client):
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_a_dependency_down_is_named_in_words_without_the_drivers_message(
        client, monkeypatch, fresh_cache):
    def refused():
        raise ConnectionRefusedError("[Errno 111] connect to db.internal:5432 as app_owner")

    monkeypatch.setitem(health.CHECKS, "database", refused)
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {"status": "degraded", "down": ["database"],
                             "detail": "down: database"}
    details = client.get("/healthz/details", headers=ops())
    assert details.status_code == 503
    assert details.json()["checks"]["database"] == "down: ConnectionRefusedError"
    assert "db.internal" not in answer.text + details.text


@pytest.mark.parametrize("route", ["/healthz/details", "/metrics"])
@pytest.mark.parametrize("credential", [None, "Bearer not-the-ops-token", "Basic b3BzOm9wcw=="])
def test_ops_routes_refuse_anyone_without_the_ops_token(client, route, credential):
    headers = {"Authorization": credential} if credential else {}
    answer = client.get(route, headers=headers)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert "floodgate" not in answer.text.lower().replace("floodgate_", "")  # no metrics


def test_polling_the_public_check_runs_the_checks_at_most_once_per_cache_window(client):
    before = runs(client, "/healthz")
    for _ in range(50):
        assert client.get("/healthz").status_code == 200
    assert runs(client, "/healthz") - before <= 1
    before_details = runs(client, "/healthz/details")
    for _ in range(3):
        assert client.get("/healthz/details", headers=ops()).status_code == 200
    assert runs(client, "/healthz/details") - before_details == 3  # always fresh
