"""SQS: the guard's overshoot with 1, 8 and 32 concurrent submitters, and a no-op job's
latency from submission to done on a local SQS server (moto) next to Redis.

Needs a Redis (the admission count, the meter, results) and ``pip install -e '.[sqs]'``;
starts its own moto servers on free loopback ports and stops them.

    FLOODGATE_TEST_REDIS=redis://127.0.0.1:6393 python -m bench.experiments.exp_sqs
    python -m bench.experiments.exp_sqs --only overshoot --duration 4 --limit 50

Overshoot: per submitter count, (a) no consumer: submitters send 3x the limit at once,
and SQS's count (visible + in flight + delayed, exact on moto) is compared with the
limit; (b) a consumer receives and deletes (then counts down, as the transport's ack
does) as fast as it can for ``--duration`` s while the submitters keep the queue full;
the peak of SQS's count is sampled between receives (moto computes its three counts
one after the other, so a receive in between would count messages twice). For
contrast, (c) a naive guard that reads ApproximateNumberOfMessages and sends if below.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FANOUT = "tasks.fanout.fanout_post"


def _env_for(broker: str) -> None:
    """Settings for an app on SQS (moto) or Redis; results and meter in Redis db 5."""
    from tests import support

    redis_url = os.environ.get("FLOODGATE_TEST_REDIS", "redis://127.0.0.1:6379")
    os.environ.update(
        RESULT_BACKEND=f"{redis_url}/5", DATABASE_URL="sqlite:////tmp/floodgate-exp-sqs.db",
        QUEUE_LIMITS="fanout=1000,aggregation=100,default=5000",
        SQS_QUEUE_NAME_PREFIX=f"exp{os.getpid()}-", SQS_REGION="us-east-1",
        SQS_RECONCILE_INTERVAL_S="1", SQS_RECONCILE_LAG_S="5", SQS_WAIT_TIME_S="10")
    os.environ["BROKER_URL"] = (support.broker_url("main") if broker == "sqs"
                                else f"{redis_url}/4")
    os.environ["METER_URL"] = f"{redis_url}/5"


def guarded_app(limit: int, name: str):
    from celery import Celery

    from config.settings import get_settings
    from celery_floodgate import install

    app = Celery(name, set_as_current=False)
    app.config_from_object("config.celeryconfig")
    install(app, {"fanout": limit, "aggregation": 10, "default": 10},
            get_settings().meter_redis_url, key_prefix=f"exp-sqs-{name}")
    return app


def _handles(app):
    from celery_floodgate import guard_for
    from celery_floodgate.transports.sqs import admitted_key

    with app.connection_for_write() as conn:
        channel = conn.default_channel
        url = channel._new_queue("fanout")
        sqs = channel.sqs()
    return guard_for(app).meter.client, admitted_key(guard_for(app), url), sqs, url


def _total(sqs, url) -> int:
    from celery_floodgate.transports.sqs import sqs_total

    return sqs_total(sqs, url)


def _empty(sqs, url, client, key) -> None:
    sqs.purge_queue(QueueUrl=url)
    client.delete(key, f"{key}:drift")


def overshoot(submitters: int, limit: int, duration_s: float) -> dict:
    from celery_floodgate import QueueFull

    app = guarded_app(limit, f"s{submitters}")
    client, key, sqs, url = _handles(app)
    _empty(sqs, url, client, key)

    def burst(_):
        try:
            app.send_task(FANOUT, args=("x", 0))
            return 1
        except QueueFull:
            return 0

    with ThreadPoolExecutor(max_workers=submitters) as pool:
        accepted_idle = sum(pool.map(burst, range(3 * limit)))
    idle_total = _total(sqs, url)

    stop, peak, turns = time.monotonic() + duration_s, [0], threading.Lock()
    samples = []

    def submit(_):
        n = 0
        while time.monotonic() < stop:
            try:
                app.send_task(FANOUT, args=("x", 0))
                n += 1
            except QueueFull:
                time.sleep(0.01)
        return n

    def drain():
        n = 0
        while time.monotonic() < stop:
            with turns:
                got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                          VisibilityTimeout=30).get("Messages", [])
            for m in got:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                admit_id = json.loads(base64.b64decode(m["Body"]))["headers"]["fg_admit_id"]
                n += client.zrem(key, admit_id)
        return n

    def sample():
        while time.monotonic() < stop:
            with turns:
                value = _total(sqs, url)
            samples.append(value)
            peak[0] = max(peak[0], value)
            time.sleep(0.02)

    with ThreadPoolExecutor(max_workers=submitters + 2) as pool:
        drainer, sampler = pool.submit(drain), pool.submit(sample)
        accepted_drain = sum(pool.map(submit, range(submitters)))
        drained = drainer.result()
        sampler.result()
    final_count, final_total = client.zcard(key), _total(sqs, url)
    naive = naive_overshoot(submitters, limit, sqs, url)
    app.close()
    return {"submitters": submitters, "limit": limit,
            "idle_accepted": accepted_idle, "idle_sqs_total": idle_total,
            "idle_overshoot": max(0, idle_total - limit),
            "drain_s": duration_s, "drain_accepted": accepted_drain, "drained": drained,
            "drain_peak_sqs_total": peak[0], "drain_overshoot": max(0, peak[0] - limit),
            "drain_samples": len(samples), "final_count": final_count,
            "final_sqs_total": final_total, "naive_sqs_total": naive,
            "naive_overshoot": max(0, naive - limit)}


def naive_overshoot(submitters: int, limit: int, sqs, url) -> int:
    """A guard that reads SQS's count and sends if below the limit: check, then act."""
    sqs.purge_queue(QueueUrl=url)
    stop = threading.Event()

    def submit(_):
        while not stop.is_set():
            attrs = sqs.get_queue_attributes(QueueUrl=url,
                                             AttributeNames=["ApproximateNumberOfMessages"])
            if int(attrs["Attributes"]["ApproximateNumberOfMessages"]) >= limit:
                stop.set()
                return
            sqs.send_message(QueueUrl=url, MessageBody="naive")

    with ThreadPoolExecutor(max_workers=submitters) as pool:
        list(pool.map(submit, range(submitters)))
    total = _total(sqs, url)
    sqs.purge_queue(QueueUrl=url)
    return total


def latency(n: int) -> dict:
    """No-op job (celery.ping) from .delay() to its result read back, one at a time, on an
    in-process worker (threads pool, as the integration tests run it)."""
    from celery.contrib.testing.worker import start_worker

    from config import app

    app.loader.import_module("celery.contrib.testing.tasks")
    ping = app.tasks["celery.ping"]
    times = []
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False,
                      shutdown_timeout=15, queues=["default"], loglevel="WARNING"):
        ping.apply_async(queue="default").get(timeout=60)  # warm: queues, connections
        for _ in range(n):
            start = time.perf_counter()
            ping.apply_async(queue="default").get(timeout=60, interval=0.005)
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"n": n, "median_ms": round(statistics.median(times), 1),
            "p90_ms": round(times[int(0.9 * (n - 1))], 1), "max_ms": round(times[-1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["overshoot", "latency"])
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--latency-broker", choices=["sqs", "redis"])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("FLOODGATE_TEST_BROKER", "sqs")

    if args.latency_broker:  # a child process: one broker per process (config is global)
        _env_for(args.latency_broker)
        try:
            print(json.dumps(latency(args.jobs)))
        finally:
            from tests import support
            support.stop_sqs_servers()
        return

    results = {}
    if args.only in (None, "overshoot"):
        _env_for("sqs")
        try:
            results["overshoot"] = [overshoot(n, args.limit, args.duration) for n in (1, 8, 32)]
        finally:
            from tests import support
            support.stop_sqs_servers()
    if args.only in (None, "latency"):
        results["latency"] = {}
        for broker in ("redis", "sqs"):
            out = subprocess.run([sys.executable, "-m", "bench.experiments.exp_sqs", "--latency-broker",
                                  broker, "--jobs", str(args.jobs)], cwd=ROOT, check=True,
                                 capture_output=True, text=True,
                                 env={**os.environ, "FLOODGATE_TEST_BROKER": "sqs"})
            results["latency"][broker] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
