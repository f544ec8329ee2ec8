"""A small Celery app that is not Floodgate: its own queues, no database, no settings.

It adopts back pressure the way any Celery app would (docs/getting-started.md).
Workers run it with ``celery -A tests.second_app worker``; the broker and meter come
from SHOP_BROKER_URL and SHOP_METER_URL.
"""
from __future__ import annotations

import os
import time

from celery import Celery

from celery_floodgate import install

EMAILS_LIMIT = 40
REPORTS_WAIT = "30s"

app = Celery("shop", broker=os.environ.get("SHOP_BROKER_URL", "memory://"),
             set_as_current=False)
app.conf.update(
    task_routes={"shop.send_email": {"queue": "emails"}, "shop.build_report": {"queue": "reports"}},
    task_default_queue="emails",
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
)
limits = {"emails": EMAILS_LIMIT}
if not app.conf.broker_url.startswith("amqp"):  # a wait limit needs the Redis broker
    limits["reports"] = REPORTS_WAIT
guard = install(app, limits=limits, meter_url=os.environ.get("SHOP_METER_URL"),
                key_prefix=os.environ.get("SHOP_KEY_PREFIX"),
                unbounded=() if "reports" in limits else ("reports",))


@app.task(name="shop.send_email")
def send_email(to: str, pause_s: float = 0.0) -> str:
    time.sleep(pause_s)
    return f"sent to {to}"


@app.task(name="shop.build_report")
def build_report(name: str) -> str:
    return f"report {name}"
