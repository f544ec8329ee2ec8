"""(d) A wait limit: QUEUE_LIMITS=fanout=2s while the drain rate halves mid-run.

Two workers (``-P threads -c 2`` each) drain ``fanout``; open-loop submitters
offer ``factor`` x the two-worker capacity. Halfway through, one worker gets
SIGTERM (by PID), halving the drain rate. Jobs accepted once the meter has
measured the new rate (at most ``settle_s`` after the change) must keep a p99
wait-to-start <= 2.2 s. Redis only: wait limits are refused on RabbitMQ.
"""
from __future__ import annotations

import os
import signal
import threading
import time

from bench.harness import broker as brokers
from bench.harness.driver import clear_runs, floodgate_app, read_runs, wait_ready
from bench.experiments.exp_b import QUEUE, _worker
from bench.harness.load import OpenLoop, Sampler
from bench.harness.procs import run_phase
from bench.harness.producers import Producers
from bench.harness.stats import percentile, rnd

WAIT_S = 2.0
TARGET_P99_S = 2.2
SETTLE_S = 5.0


def _probes(depth):
    from config import app
    from celery_floodgate import guard_for

    guard = guard_for(app)
    limit = guard.limit_for(QUEUE)
    return {"depth": depth, "bound": lambda: guard.length_bound(limit),
            "rate": lambda: guard.drain_rate(QUEUE)}


def _offer_and_cut(producers, depth, victim, params: dict) -> dict:
    """Offer load; SIGTERM ``victim`` (by PID) at ``change_at_s``; sample all along."""
    sampler = Sampler(_probes(depth))
    sampler.start()
    load = OpenLoop(lambda: producers.send("bench.sleep", (params["task_ms"],), QUEUE),
                    params["rate"], params["duration_s"])
    t0 = time.time() + 0.2
    t_change = t0 + params["change_at_s"]
    threading.Timer(t_change - time.time(), victim.signal, args=(signal.SIGTERM,)).start()
    load.run(t0)
    t_end = time.time()
    time.sleep(2 * WAIT_S + 3)  # let the last accepted jobs start
    return {"load": load, "samples": sampler.stop(), "runs": read_runs(),
            "t0": t0, "t_change": t_change, "t_end": t_end}


def phase_wait_limit(params: dict) -> dict:
    app, broker = floodgate_app(), os.environ["BENCH_BROKER"]
    clear_runs()
    brokers.purge(broker, QUEUE)
    producers = Producers(app, size=4)
    depth = brokers.Depth(broker, QUEUE)
    workers = [_worker("wait1"), _worker("wait2")]
    try:
        wait_ready(app, QUEUE)
        clear_runs()
        timeline = _offer_and_cut(producers, depth, workers[1], params)
    finally:
        for worker in workers:
            worker.stop()
        producers.close()
    brokers.purge(broker, QUEUE)
    from config.queues import PREFETCH

    return {**summarise(**timeline), "fanout_prefetch": PREFETCH[QUEUE]}


def _rate_between(runs, a: float, b: float) -> float:
    return sum(1 for r in runs if a <= r.start < b) / (b - a)


def summarise(load, runs, samples, t0, t_change, t_end) -> dict:
    before = _rate_between(runs, t0 + 10, t_change)
    after = _rate_between(runs, t_change + 10, t_end)
    measured = next((s["t"] for s in samples
                     if s["t"] >= t_change and s["rate"] and s["rate"] <= 1.1 * after), None)
    by_id = {r.id: r for r in runs}
    accepted = [(t, by_id.get(tid)) for tid, t in load.accepted]
    not_run = sum(1 for _, r in accepted if r is None)
    waits = lambda lo, hi: [r.wait for t, r in accepted if r and lo <= t < hi]  # noqa: E731
    settled = waits(t_change + SETTLE_S, t_end)
    after_measured = waits(measured, t_end) if measured else []
    steady_before = waits(t0 + 10, t_change - SETTLE_S)
    around = waits(t_change - SETTLE_S, t_change + SETTLE_S)
    p99 = percentile(settled, 99)
    return {
        "offered_per_s": rnd(load.offered / (t_end - t0), 1),
        "accepted": len(accepted), "refused": len(load.refused), "not_run": not_run,
        "drain_before_per_s": rnd(before, 1), "drain_after_per_s": rnd(after, 1),
        "change_at_s": rnd(t_change - t0, 2),
        "rate_measured_after_s": rnd(measured - t_change, 2) if measured else None,
        "wait_p99_steady_before_s": rnd(percentile(steady_before, 99)),
        "wait_max_around_change_s": rnd(max(around, default=None)),
        "wait_p99_settled_s": rnd(p99), "wait_p50_settled_s": rnd(percentile(settled, 50)),
        "wait_max_settled_s": rnd(max(settled, default=None)),
        "wait_p99_after_measured_s": rnd(percentile(after_measured, 99)),
        "jobs_settled": len(settled), "settle_s": SETTLE_S, "target_p99_s": TARGET_P99_S,
        "pass": p99 is not None and p99 <= TARGET_P99_S,
        "series": {
            "samples": [(rnd(s["t"] - t0, 2), s["depth"], s["bound"], rnd(s["rate"], 1))
                        for s in samples],
            "waits": [(rnd(t - t0, 3), rnd(r.wait, 3)) for t, r in accepted if r],
        },
    }


def run(broker: str = "redis", capacity: float | None = None, duration_s: float = 60,
        task_ms: float = 20, factor: float = 1.5) -> dict:
    """``capacity`` is one worker's; two start, so offered = factor x 2 x capacity."""
    if broker != "redis":
        raise SystemExit("experiment d needs Redis: wait limits are refused on RabbitMQ")
    brokers.reset(broker)
    if capacity is None:
        capacity = run_phase("b.capacity", broker, f"{QUEUE}=1000000",
                             {"task_ms": task_ms, "duration_s": 20})["capacity"]
    brokers.reset(broker)
    out = run_phase("d.wait_limit", broker, f"{QUEUE}={WAIT_S:g}s",
                    {"rate": factor * 2 * capacity, "duration_s": duration_s,
                     "change_at_s": duration_s / 2, "task_ms": task_ms})
    out.update(broker=broker, capacity_one_worker_per_s=rnd(capacity, 1), factor=factor,
               wait_limit_s=WAIT_S)
    return out
