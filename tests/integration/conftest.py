"""Integration tests: real broker (FLOODGATE_TEST_BROKER=redis|amqp), real Redis results,
SQLite or PostgreSQL (TEST_DATABASE=postgresql), each database made by the migrations.
Workers come from the pytest-celery plugin's ``celery_session_worker`` fixture, run on our
own app. API_KEY_SECRET and OPS_TOKEN are random per session: tests read them from
os.environ (subprocesses inherit them through support.stack_env)."""
import os
import tempfile

from tests import support

_tmp = tempfile.mkdtemp(prefix="floodgate-it-")
if support.broker_kind() == "sqs":  # moto servers start on first use (tests/support.py)
    os.environ.pop("SQS_ENDPOINT_URL", None)  # the broker URL names the moto server
    os.environ.update(SQS_REGION="us-east-1", SQS_WAIT_TIME_S="1",
                      SQS_QUEUE_NAME_PREFIX=f"{support.PREFIX}-", SQS_RECONCILE_INTERVAL_S="1",
                      SQS_RECONCILE_LAG_S="2")
support.reset_namespace("main")
support.reset_results()
os.environ.update(
    BROKER_URL=support.broker_url("main"),
    RESULT_BACKEND=support.results_url(),
    DATABASE_URL=support.database_url("floodgate_test", _tmp),
    QUEUE_LIMITS="fanout=200,aggregation=50,default=5000",
    FANOUT_CHUNK_SIZE="50",
    COMMIT_GRACE_S="2",
    FLOWER_BASIC_AUTH="admin:integration-pass",
    **support.api_env(),
)
for _var in ("METER_URL", "MIGRATION_DATABASE_URL", "APP_DB_ROLE"):
    os.environ.pop(_var, None)
# celery.contrib.testing reads TEST_BROKER as a broker URL; ours is FLOODGATE_TEST_BROKER.
os.environ.pop("TEST_BROKER", None)

import pytest  # noqa: E402
from celery import Celery  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def sqs_servers():
    """FLOODGATE_TEST_BROKER=sqs: the moto servers the session started, stopped at its end."""
    yield
    support.stop_sqs_servers()


@pytest.fixture(scope="session")
def celery_session_app():
    from config import app

    return app


def _as_worker_ready(sender=None, worker=None, consumer=None, **_):
    """Celery's test worker sends test_worker_started instead of worker_ready; send it."""
    from celery.signals import worker_ready

    worker_ready.send(sender=consumer)


from celery.contrib.testing.worker import test_worker_started  # noqa: E402

test_worker_started.connect(_as_worker_ready, weak=False)


@pytest.fixture(scope="session")
def celery_includes():
    return ["celery.contrib.testing.tasks", "tasks.demo.fanout", "scheduler.tasks"]


@pytest.fixture(scope="session")
def celery_worker_pool():
    return "threads"


@pytest.fixture(scope="session")
def celery_worker_parameters():
    return {"concurrency": 4, "shutdown_timeout": 30}


@pytest.fixture(scope="session")
def api(celery_session_worker):
    from api.main import app

    with TestClient(app) as client:
        yield client


@pytest.fixture
def idle_app():
    """Our Celery config on a broker namespace of its own that no worker consumes."""
    support.reset_namespace("guard")
    from config.celery_app import bound_queues

    app = Celery("floodgate-idle", set_as_current=False)
    app.config_from_object("config.celeryconfig")
    app.conf.broker_url = support.broker_url("guard")
    bound_queues(app)  # the same limits and meter as Floodgate's own app
    with app.connection_for_write() as conn:  # declared as every publisher would
        for queue in app.conf.task_queues:
            queue.bind(conn.default_channel).declare()
    yield app
    app.close()


@pytest.fixture
def app():
    """Floodgate's configuration on the 'faults' namespace, for tests that start worker
    subprocesses of their own (tests/integration/workers.py)."""
    from tests.integration import workers

    support.reset_namespace("faults")
    app = workers.faults_app()
    yield app
    app.close()
