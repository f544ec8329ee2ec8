"""Unit tests: no network. Celery runs on memory://, the app's data in a temp SQLite file."""
import os
import tempfile

_db = os.path.join(tempfile.mkdtemp(prefix="floodgate-unit-"), "unit.db")
os.environ.update(
    BROKER_URL="memory://",
    DATABASE_URL=f"sqlite:///{_db}",
    QUEUE_LIMITS="fanout=1000,aggregation=100,default=5000",
    FLOWER_BASIC_AUTH="admin:unit-test-pass",
)
for var in ("RESULT_BACKEND", "METER_URL"):
    os.environ.pop(var, None)

import pytest  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="session")
def client():
    from api.main import app

    with TestClient(app) as c:
        yield c
