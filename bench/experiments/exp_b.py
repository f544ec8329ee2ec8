"""(b) The source text's experiment: offer 3x the drain rate for 60 s, with and without the guard.

A bench task sleeps ``task_ms``; one worker ``-P threads -c 2`` drains the
``fanout`` queue. Its capacity is measured first with a full queue. Then
open-loop submitters offer 3x that rate for ``duration_s``; refused
submissions are dropped and counted. "Without guard" is the same app and
worker with QUEUE_LIMITS=fanout=1000000 (never reached).
"""
from __future__ import annotations

import os
import time

from bench.harness import broker as brokers
from bench.harness.driver import clear_runs, floodgate_app, prefill, read_runs, wait_ready
from bench.harness.load import OpenLoop, Sampler
from bench.harness.procs import Worker, run_phase
from bench.harness.producers import Producers
from bench.harness.stats import percentile, rnd

QUEUE = "fanout"
LIMIT = 200
UNGUARDED = 1_000_000


def _worker(name: str, concurrency: int = 2) -> Worker:
    return Worker(dict(os.environ), name, QUEUE, pool="threads", concurrency=concurrency)


def measure_capacity(app, broker: str, task_ms: float, duration_s: float, skip_s: float = 3,
                     concurrency: int = 2) -> float:
    """Tasks/s one worker sustains with a full queue (window after a warm-up)."""
    clear_runs()
    brokers.purge(broker, QUEUE)
    prefill(app, QUEUE, "bench.sleep", lambda i: (task_ms,), int(110 * (duration_s + skip_s + 4)))
    with _worker("capacity", concurrency):
        while not read_runs():
            time.sleep(0.2)
        first = min(r.start for r in read_runs())
        time.sleep(max(0.0, first + skip_s + duration_s + 0.5 - time.time()))
    lo, hi = first + skip_s, first + skip_s + duration_s
    started = sum(1 for r in read_runs() if lo <= r.start < hi)
    brokers.purge(broker, QUEUE)
    return started / duration_s


def phase_capacity(params: dict) -> dict:
    app = floodgate_app()
    broker = os.environ["BENCH_BROKER"]
    return {"capacity": measure_capacity(app, broker, params["task_ms"], params["duration_s"])}


def offer(app, rate: float, duration_s: float, task_ms: float, broker: str,
          grace_s: float, extra_probes: dict | None = None) -> dict:
    """Open-loop offer while sampling depth; returns raw accepted/refused/runs/samples."""
    producers = Producers(app, size=4)
    submit = lambda: producers.send("bench.sleep", (task_ms,), QUEUE)  # noqa: E731
    depth = brokers.Depth(broker, QUEUE)
    sampler = Sampler({"depth": depth, **(extra_probes or {})})
    sampler.start()
    t0 = time.time() + 0.2
    load = OpenLoop(submit, rate, duration_s)
    load.run(t0)
    t_end = time.time()
    time.sleep(grace_s)
    cutoff = time.time()
    samples = sampler.stop()
    depth.close()
    producers.close()
    return {"t0": t0, "t_end": t_end, "cutoff": cutoff, "load": load, "samples": samples}


def summarise(raw: dict, runs: list, capacity: float, limit: int) -> dict:
    t0, t_end, cutoff, load = raw["t0"], raw["t_end"], raw["cutoff"], raw["load"]
    started = {r.id: r for r in runs if r.start <= cutoff}
    waits = [r.wait for r in started.values()]
    pending = [cutoff - t for tid, t in load.accepted if tid not in started]
    in_window = sum(1 for r in started.values() if t0 <= r.start < t_end)
    duration = t_end - t0
    depths = [s["depth"] for s in raw["samples"] if s["depth"] is not None]
    return {
        "offered": load.offered, "accepted": len(load.accepted), "refused": len(load.refused),
        "errors": load.errors, "offered_per_s": rnd(load.offered / duration, 1),
        "accepted_per_s": rnd(len(load.accepted) / duration, 1),
        "throughput_per_s": rnd(in_window / duration, 1),
        "goodput_vs_capacity": rnd(in_window / duration / capacity),
        "started": len(waits), "not_started_at_cutoff": len(pending),
        "wait_p50_s": rnd(percentile(waits, 50)), "wait_p99_s": rnd(percentile(waits, 99)),
        "wait_max_s": rnd(max(waits, default=None)),
        "wait_p99_incl_pending_lower_bound_s": rnd(percentile(waits + pending, 99)),
        "depth_max": max(depths, default=None), "limit": limit,
        "submitter_max_lag_s": rnd(load.behind_s),
        "series": {
            "depth": [(rnd(s["t"] - t0, 2), s["depth"]) for s in raw["samples"]],
            "waits": [(rnd(r.sent - t0, 3), rnd(r.wait, 3)) for r in started.values()],
        },
    }


def phase_overload(params: dict) -> dict:
    app = floodgate_app()
    broker = os.environ["BENCH_BROKER"]
    clear_runs()
    brokers.purge(broker, QUEUE)
    capacity, limit = params["capacity"], params["limit"]
    with _worker("overload") as worker:
        wait_ready(app, QUEUE)
        clear_runs()
        raw = offer(app, params["factor"] * capacity, params["duration_s"], params["task_ms"],
                    broker, params["grace_s"])
        runs = read_runs()
    brokers.purge(broker, QUEUE)
    from config.queues import PREFETCH

    return {**summarise(raw, runs, capacity, limit), "fanout_prefetch": PREFETCH[QUEUE]}


def run(broker: str, task_ms: float = 20, duration_s: float = 60, factor: float = 3) -> dict:
    brokers.reset(broker)
    cap = run_phase("b.capacity", broker, f"{QUEUE}={UNGUARDED}",
                    {"task_ms": task_ms, "duration_s": 20})["capacity"]
    common = {"capacity": cap, "factor": factor, "duration_s": duration_s, "task_ms": task_ms}
    out = {"broker": broker, "capacity_per_s": rnd(cap, 1), "task_ms": task_ms,
           "duration_s": duration_s, "factor": factor}
    for label, limit in (("guarded", LIMIT), ("unguarded", UNGUARDED)):
        brokers.reset(broker)
        grace = min(8.0, LIMIT / cap + 3)
        out[label] = run_phase("b.overload", broker, f"{QUEUE}={limit}",
                               {**common, "limit": limit, "grace_s": grace})
    out["targets"] = targets(out["guarded"], out["unguarded"], cap)
    out["fanout_prefetch"] = out["guarded"].get("fanout_prefetch")
    return out


def targets(guarded: dict, unguarded: dict, capacity: float) -> dict:
    """The issue's three targets for the guarded run.

    "Drain rate" in the wait target is the rate the queue actually drained in the
    guarded run; "capacity" in the goodput target is the unguarded run's throughput
    (same worker, same load, queue never empty). Figures against the capacity
    measured alone beforehand are given too.
    """
    drain, full = guarded["throughput_per_s"], unguarded["throughput_per_s"]
    bound = 1.1 * LIMIT / drain
    return {
        "depth_max": guarded["depth_max"], "depth_pass": guarded["depth_max"] <= LIMIT,
        "wait_p99_s": guarded["wait_p99_s"], "wait_bound_s": rnd(bound),
        "wait_pass": guarded["wait_p99_s"] <= bound,
        "wait_bound_vs_capacity_s": rnd(1.1 * LIMIT / capacity),
        "goodput_vs_unguarded": rnd(drain / full), "goodput_pass": drain / full >= 0.95,
        "goodput_vs_capacity": guarded["goodput_vs_capacity"],
    }
