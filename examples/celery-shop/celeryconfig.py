"""The shop's Celery settings, as Celery's tutorial keeps them: a module of its own.

Each setting is documented at https://docs.celeryq.dev/en/stable/userguide/configuration.html
"""
import os

broker_url = os.environ.get("SHOP_BROKER_URL", "redis://localhost:6379/0")
result_backend = os.environ.get("SHOP_RESULT_BACKEND", "redis://localhost:6379/1")
task_routes = {"tasks.send_email": {"queue": "emails"}}
# A worker takes one message at a time and acknowledges it when done, so what waits
# in the queue is what has not been started: the queue's limit bounds the backlog.
worker_prefetch_multiplier = 1
task_acks_late = True
