"""A plain Celery project laid out as Celery's tutorial lays it out: ``tasks.py`` beside
``config.py``. It adopts back pressure in the two documented lines below."""
import os
import time

from celery import Celery

from celery_floodgate import install

app = Celery("tasks")
app.config_from_object("config")
guard = install(app, limits={"bounded": os.environ.get("LIB_TEST_LIMIT", "20"),
                             "celery": 1000},
                meter_url=os.environ.get("LIB_TEST_METER_URL"),
                key_prefix=os.environ.get("LIB_TEST_KEY_PREFIX"))


@app.task
def add(x, y):
    return x + y


@app.task
def slow(seconds):
    time.sleep(seconds)
    return seconds


@app.task
def record(key, value):
    """Append ``value`` to the Redis list ``key`` (the suite's database): a run, counted."""
    import redis

    redis.Redis.from_url(os.environ["LIB_TEST_METER_URL"]).rpush(key, repr(value))
    return value


@app.task
def collect(results, key):
    """A chord body: records the header's results under ``key``."""
    return record(key, results)
