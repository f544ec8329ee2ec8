"""The same project served by a process that does not call install(): it shares the
queues the installed app declared (``passive_queues``) when LIB_TEST_PASSIVE=1."""
import os

from celery import Celery

from celery_floodgate import passive_queues

app = Celery("tasks")
app.config_from_object("config")
if os.environ.get("LIB_TEST_PASSIVE") == "1":
    passive_queues(app, ["bounded"])


@app.task(name="tasks.add")
def add(x, y):
    return x + y
