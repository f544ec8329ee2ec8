"""Unit tests: no network. Celery runs on memory://, the app's data in a temp SQLite file
made by the migrations. API_KEY_SECRET and OPS_TOKEN are random per session: tests read
them from os.environ."""
import os
import tempfile

from tests import support

_db = os.path.join(tempfile.mkdtemp(prefix="floodgate-unit-"), "unit.db")
os.environ.update(
    BROKER_URL="memory://",
    DATABASE_URL=f"sqlite:///{_db}",
    QUEUE_LIMITS="fanout=1000,aggregation=100,default=5000",
    FLOWER_BASIC_AUTH="admin:unit-test-pass",
    **support.api_env(),
)
for var in ("RESULT_BACKEND", "METER_URL", "MIGRATION_DATABASE_URL", "APP_DB_ROLE"):
    os.environ.pop(var, None)
support.migrate(os.environ["DATABASE_URL"])

import pytest  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="session")
def client():
    from api.main import app

    with TestClient(app) as c:
        yield c
