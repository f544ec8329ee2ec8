"""Fixtures shared by the unit and integration suites."""
import pytest


@pytest.fixture(params=["async", "threads"])
def submit_path(request, monkeypatch):
    """Each way the API admits and stores a post (API_SUBMIT_PATH), read per request, so
    one API (a TestClient's, or a subprocess started after this) serves the test on it."""
    from config.settings import get_settings

    monkeypatch.setenv("API_SUBMIT_PATH", request.param)
    get_settings.cache_clear()
    yield request.param
    get_settings.cache_clear()
