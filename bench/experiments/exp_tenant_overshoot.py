"""(g') Per-tenant overshoot on RabbitMQ: the meter's counts against the queue's contents.

Fair admission on RabbitMQ counts each tenant's holding in the meter's Redis
(`celery_floodgate.tenants`); the broker holds the messages. This measures how far the
two differ while a real worker consumes as three tenants submit, and how far a tenant's
true holding exceeds its share.

* One ``celery worker`` (threads pool, ``--concurrency 2 --prefetch-multiplier 4``)
  runs ``bench.sleep`` (``--task-ms`` each) from queue ``default`` (limit ``--limit``).
* Submitters: ``noisy`` (4 threads, a closed loop that ignores Retry-After) and two polite
  tenants (1 thread each, ``--polite-rate`` posts/s, sleeping Retry-After when refused).
* Live, at 20 Hz: the meter's total against the broker's depth (passive declare, read
  before and after the counts).
* Every ``--sample-every`` s the submitters pause (none mid-publish), the worker stops
  consuming (``cancel_consumer``; what it prefetched runs and is taken back within a
  second), and the ready messages are read from the broker one by one (py-amqp
  ``basic_get``, published again as they were, in order, then acked: nothing is flagged
  redelivered) and counted by their ``tenant`` header: the truth. Against it: each
  tenant's meter count and its share (the limit divided among the tenants that hold
  messages). Then the worker consumes again and the submitters resume.

Runs in its own RabbitMQ vhost and Redis database (``--vhost``, ``--redis``; both must be
used by nothing else), created and emptied by the run. About ``--duration`` + 20 s.
``python -m bench.experiments.exp_tenant_overshoot [--duration 60]``
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import amqp
import redis

from bench.harness.procs import stop_group

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "default"
NOISY, POLITE = "noisy", ("polite-1", "polite-2")


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=60)


def fresh_vhost(vhost: str) -> None:
    rabbitmqctl("delete_vhost", vhost)
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")


def run_env(args, tmp: str) -> dict[str, str]:
    return {**os.environ, "BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{args.vhost}",
            "RESULT_BACKEND": args.redis, "BENCH_REDIS_URL": args.redis,
            "DATABASE_URL": f"sqlite:///{tmp}/overshoot.db", "FAIR_ADMISSION": "true",
            "QUEUE_LIMITS": f"default={args.limit}", "PYTHONPATH": str(ROOT)}


class Broker:
    """A raw py-amqp connection to the run's vhost (not the guarded channel)."""

    def __init__(self, vhost: str) -> None:
        self.conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest",
                                    virtual_host=vhost)
        self.conn.connect()
        self.channel = self.conn.channel()
        self.channel.confirm_select()

    def depth(self) -> int:
        return self.channel.queue_declare(QUEUE, passive=True).message_count

    def tenants(self) -> Counter:
        """Ready messages per tenant header; each is published again, as it was."""
        taken, seen = [], Counter()
        while (message := self.channel.basic_get(QUEUE, no_ack=False)) is not None:
            taken.append(message)
        for message in taken:
            seen[(message.headers or {}).get("tenant")] += 1
            self.channel.basic_publish_confirm(amqp.Message(message.body, **message.properties),
                                               exchange="", routing_key=QUEUE)
        if taken:
            self.channel.basic_ack(taken[-1].delivery_tag, multiple=True)
        return seen


class Submitters:
    """The tenants' threads; ``pause()`` returns once none is mid-publish."""

    def __init__(self, app, args) -> None:
        self.app, self.args = app, args
        self.go, self.stop = threading.Event(), threading.Event()
        self.busy = [threading.Lock() for _ in range(4 + len(POLITE))]
        self.sent, self.refused = Counter(), Counter()
        lanes = [(NOISY, i, None) for i in range(4)]
        lanes += [(t, 4 + i, args.polite_rate) for i, t in enumerate(POLITE)]
        self.threads = [threading.Thread(target=self.lane, args=lane, daemon=True)
                        for lane in lanes]

    def lane(self, tenant: str, slot: int, rate: float | None) -> None:
        from celery_floodgate import QueueFull

        while not self.stop.is_set():
            self.go.wait()
            wait_s = 1 / rate if rate else 0.0
            with self.busy[slot]:
                if not self.go.is_set():
                    continue
                try:
                    self.app.send_task("bench.sleep", args=(self.args.task_ms,), queue=QUEUE,
                                       ignore_result=True,
                                       headers={"tenant": tenant, "criticality": "default"})
                    self.sent[tenant] += 1
                except QueueFull as exc:
                    self.refused[tenant] += 1
                    if rate:  # the polite obey Retry-After; the noisy try again at once
                        wait_s = max(wait_s, exc.retry_after_s)
            if wait_s:
                self.stop.wait(wait_s)

    def start(self) -> None:
        self.go.set()
        for thread in self.threads:
            thread.start()

    def pause(self) -> None:
        self.go.clear()
        for lock in self.busy:
            with lock:
                pass

    def finish(self) -> None:
        self.stop.set()
        self.go.set()
        for thread in self.threads:
            thread.join(5)


def worker(env: dict, tmp: str, name: str) -> subprocess.Popen:
    argv = [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", "-Q", QUEUE,
            "-n", f"{name}@%h", "-I", "bench.harness.tasks", "-P", "threads", "-c", "2",
            "--prefetch-multiplier", "4", "--without-mingle", "--without-gossip",
            "--loglevel=WARNING"]
    log = open(f"{tmp}/worker.log", "ab")
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def share(limit: int, truth: Counter, tenant: str) -> int:
    """``tenant``'s share with equal weights: the limit among the tenants that hold."""
    active = len({t for t, n in truth.items() if n > 0} | {tenant})
    return max(1, limit // active)


def sample(app, broker: Broker, submitters: Submitters, guard, worker_name: str,
           args) -> dict:
    submitters.pause()
    app.control.cancel_consumer(QUEUE, destination=[worker_name], reply=True, timeout=2)
    time.sleep(1.5)  # its prefetched messages run; their receipts are flushed (1 s)
    truth, depth = broker.tenants(), broker.depth()
    meter = Counter(guard.tenant_held(QUEUE))
    app.control.add_consumer(QUEUE, destination=[worker_name], reply=True, timeout=2)
    submitters.go.set()
    tenants = set(truth) | set(meter)
    return {"depth": depth, "truth": dict(truth), "meter": dict(meter),
            "over_share": {t: truth[t] - share(args.limit, truth, t) for t in tenants},
            "meter_low": {t: truth[t] - meter[t] for t in tenants}}


def run(args) -> dict:
    tmp = tempfile.mkdtemp(prefix="overshoot-")
    env = run_env(args, tmp)
    os.environ.update(env)  # the driver's app reads the same settings
    fresh_vhost(args.vhost)
    redis.Redis.from_url(args.redis).flushdb()
    from bench.harness.tasks import app

    guard = app._floodgate_guard
    name = f"overshoot@{socket.gethostname()}"
    proc = worker(env, tmp, "overshoot")
    submitters = Submitters(app, args)
    broker = None
    live = {"meter_above_depth": 0, "meter_below_depth": 0, "readings": 0, "max_depth": 0}
    samples = []
    try:
        deadline = time.monotonic() + 30
        while not app.control.ping(destination=[name], timeout=0.5):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the worker did not start; see {tmp}/worker.log")
        broker = Broker(args.vhost)
        submitters.start()
        end = time.monotonic() + args.duration
        next_sample = time.monotonic() + args.sample_every
        while time.monotonic() < end:
            if time.monotonic() >= next_sample:
                samples.append(sample(app, broker, submitters, guard, name, args))
                next_sample = time.monotonic() + args.sample_every
                continue
            # The depth read on both sides of the counts: the gap between the reads
            # (publishes and receipts meanwhile) is not taken for an error of the meter.
            before = broker.depth()
            counted = sum(guard.tenant_held(QUEUE).values())
            after = broker.depth()
            live["meter_above_depth"] = max(live["meter_above_depth"],
                                            counted - max(before, after))
            live["meter_below_depth"] = max(live["meter_below_depth"],
                                            min(before, after) - counted)
            live["max_depth"] = max(live["max_depth"], before, after)
            live["readings"] += 1
            time.sleep(0.05)
    finally:
        submitters.finish()
        stop_group(proc)
        if broker is not None:
            broker.conn.close()
        app.close()
        rabbitmqctl("delete_vhost", args.vhost)
        redis.Redis.from_url(args.redis).flushdb()
    return summarise(args, samples, live, submitters)


def summarise(args, samples: list[dict], live: dict, submitters: Submitters) -> dict:
    above = [s for s in samples if s["depth"] >= args.limit // 2]  # above the watermark
    tenants = (NOISY, *POLITE)
    return {
        "limit": args.limit, "duration_s": args.duration, "samples": len(samples),
        "samples_above_watermark": len(above), "live": live,
        "sent": dict(submitters.sent), "refused": dict(submitters.refused),
        "max_over_share": {t: max((s["over_share"].get(t, 0) for s in above), default=None)
                           for t in tenants},
        "max_abs_meter_minus_truth": max((abs(v) for s in samples
                                          for v in s["meter_low"].values()), default=0),
        "max_truth_minus_meter": max((v for s in samples for v in s["meter_low"].values()),
                                     default=0),
        "depth_vs_truth_total": max((abs(s["depth"] - sum(s["truth"].values()))
                                     for s in samples), default=0),
        "noisy_held_p50": sorted(s["truth"].get(NOISY, 0) for s in above)[len(above) // 2]
        if above else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--sample-every", type=float, default=2.0)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--task-ms", type=float, default=10)
    parser.add_argument("--polite-rate", type=float, default=20)
    parser.add_argument("--vhost", default="floodgate_overshoot")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()
    print(json.dumps(run(args), indent=1))


if __name__ == "__main__":
    main()
