"""(a) Guard overhead: guarded submit rate vs plain Celery's, side by side, no workers.

Each rep publishes ``n`` messages with ``app.send_task`` from one thread to an
empty queue with a large limit, for each of three apps in rotating order:

* guarded      - Floodgate's app (guarded transport, queue with x-max-length on RabbitMQ)
* plain        - Celery defaults + JSON, default transport, no limit; confirms on RabbitMQ
* plain_config - Floodgate's whole configuration minus the guard (isolates the guard)
"""
from __future__ import annotations

import os
import time

from bench.harness import broker as brokers
from bench.harness.driver import floodgate_app
from bench.harness.procs import run_phase
from bench.harness.stats import median, rnd

VARIANTS = ("guarded", "plain", "plain_config")
TARGET = 0.95


def _apps() -> dict:
    from bench.harness.plain_app import QUEUE, make_plain_app, same_config_minus_guard

    url = os.environ["BROKER_URL"]
    return {"guarded": (floodgate_app(), "fanout"),
            "plain": (make_plain_app(url), QUEUE),
            "plain_config": (same_config_minus_guard(url), QUEUE)}


def _publish(app, queue: str, n: int) -> float:
    """Messages per second for ``n`` sequential send_task calls."""
    start = time.perf_counter()
    for i in range(n):
        app.send_task("bench.noop", args=(i, n, 0), queue=queue, ignore_result=True)
    return n / (time.perf_counter() - start)


def _refusals(app, send, n: int) -> float:
    """Milliseconds per refused publish to the full ``aggregation`` queue (limit 5)."""
    from celery_floodgate import QueueFull

    start = time.perf_counter()
    for _ in range(n):
        try:
            send()
        except QueueFull:
            pass
        else:
            raise RuntimeError("the aggregation queue should be full")
    return (time.perf_counter() - start) / n * 1000


def refusal_cost(app, broker: str, n: int, reps: int) -> dict:
    """A refusal via send_task's pooled producer vs via a producer the caller holds."""
    from bench.harness.producers import Producers

    held = Producers(app, size=1)
    brokers.purge(broker, "aggregation")
    for _ in range(5):
        held.send("bench.noop", (0, 1, 0), "aggregation")
    pooled_send = lambda: app.send_task("bench.noop", args=(0, 1, 0),  # noqa: E731
                                        queue="aggregation", ignore_result=True)
    held_send = lambda: held.send("bench.noop", (0, 1, 0), "aggregation")  # noqa: E731
    out = {"pooled": [], "held": []}
    for _ in range(reps):
        out["pooled"].append(_refusals(app, pooled_send, n))
        out["held"].append(_refusals(app, held_send, n))
    held.close()
    brokers.purge(broker, "aggregation")
    return out


def phase_publish(params: dict) -> dict:
    broker, n, reps = os.environ["BENCH_BROKER"], params["n"], params["reps"]
    apps = _apps()
    for app, queue in apps.values():  # warm-up: connections, declarations
        _publish(app, queue, 200)
        brokers.purge(broker, queue)
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for rep in range(reps):  # short reps in rotating order: the machine's drift hits all three
        order = VARIANTS[rep % 3:] + VARIANTS[:rep % 3]
        for variant in order:
            app, queue = apps[variant]
            rates[variant].append(_publish(app, queue, n))
            brokers.purge(broker, queue)
    refusal = refusal_cost(apps["guarded"][0], broker, params["refusals"], 3)
    return {"rates": rates, "refusal_ms": refusal}


def run(broker: str, n: int = 600, reps: int = 15, refusals: int = 200) -> dict:
    brokers.reset(broker)
    raw = run_phase("a.publish", broker, "fanout=1000000,aggregation=5",
                    {"n": n, "reps": reps, "refusals": refusals})
    rates = raw["rates"]
    med = {v: median(r) for v, r in rates.items()}
    ratio = med["guarded"] / med["plain"]
    paired = lambda other: median([g / p for g, p in  # noqa: E731
                                   zip(rates["guarded"], rates[other])])
    return {
        "broker": broker, "n": n, "reps": reps,
        "median_rate": {v: rnd(r, 1) for v, r in med.items()},
        "rates": {v: [rnd(x, 1) for x in r] for v, r in rates.items()},
        "ratio_vs_plain": rnd(ratio), "ratio_vs_plain_paired": rnd(paired("plain")),
        "ratio_vs_plain_config": rnd(med["guarded"] / med["plain_config"]),
        "ratio_vs_plain_config_paired": rnd(paired("plain_config")),
        "target": TARGET, "pass": ratio >= TARGET,
        "refusal_ms_median": {k: rnd(median(v), 2) for k, v in raw["refusal_ms"].items()},
    }
