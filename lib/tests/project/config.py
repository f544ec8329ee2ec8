"""The plain project's Celery settings, as a user's own ``config.py`` would hold them."""
import os

broker_url = os.environ["LIB_TEST_BROKER_URL"]
result_backend = os.environ.get("LIB_TEST_RESULT_BACKEND")
task_routes = {"tasks.slow": {"queue": "bounded"}, "tasks.add": {"queue": "bounded"}}
task_default_queue = "celery"
worker_prefetch_multiplier = 1
task_acks_late = True
