"""A plain Celery project laid out as Celery's tutorial lays it out (``tasks.py`` beside
``celeryconfig.py``), with back pressure adopted in the lines marked below."""
import os
import time

from celery import Celery

from celery_floodgate import install

#: At most this many emails wait in the broker; one more is refused at once.
EMAILS_LIMIT = int(os.environ.get("SHOP_EMAILS_LIMIT", "10"))
#: How long sending one email takes here (a stand-in for the mail server).
SEND_S = 0.1

app = Celery("tasks")
app.config_from_object("celeryconfig")
# Back pressure: every queue the app routes to gets a length limit. On RabbitMQ,
# SHOP_METER_URL names a Redis where workers record how fast they drain, so a
# refusal's retry_after_s is measured (on Redis the broker itself serves).
install(app, limits={"emails": EMAILS_LIMIT, "celery": 1000},
        meter_url=os.environ.get("SHOP_METER_URL"))


@app.task
def send_email(to):
    time.sleep(SEND_S)
    return f"sent to {to}"
