"""(e) Safe defaults must still be fast: drain pre-filled no-op tasks, one worker.

Plain Celery's fastest configuration (acks early, ``--prefetch-multiplier 64``,
prefork / solo / threads) against Floodgate's defaults
(``celery -A config worker -Q fanout``: Floodgate's pool, tasks.runtime.pool - solo with
soft and hard time limits -, the queue's PREFETCH, acks_late) and, for comparison,
the same command with ``-P prefork`` (Celery's default pool, Floodgate's before).
Drain time runs from the first task's start to the last task's end; the first and
last ``edge`` tasks record their times.
"""
from __future__ import annotations

import os
import time

from bench.harness import broker as brokers
from bench.harness.driver import clear_runs, read_edges
from bench.harness.procs import Worker, run_phase
from bench.harness.producers import Producers
from bench.harness.stats import median, rnd

N = 10_000
EDGE = 300
TARGET = 0.9

#: name -> worker options: -A module, -P, -c, --prefetch-multiplier, extra flags and
#: BENCH_CONF setting overrides. None = the worker's default.
PLAIN = {
    "plain prefork c2 p64": {"app": "bench.harness.plain_app", "pool": "prefork", "c": 2, "p": 64},
    "plain solo p64": {"app": "bench.harness.plain_app", "pool": "solo", "c": None, "p": 64},
    "plain threads c2 p64": {"app": "bench.harness.plain_app", "pool": "threads", "c": 2, "p": 64},
}
DEFAULT = {"floodgate defaults": {"app": "config", "pool": None, "c": None, "p": None}}
#: Celery's default pool under Floodgate's configuration (Floodgate's default until 2026-11-27).
PROPOSED = {"floodgate -P prefork": {"app": "config", "pool": "prefork", "c": None, "p": None}}
DIAGNOSTIC = {
    "plain solo p64 with acks_late": {"app": "bench.harness.plain_app", "pool": "solo", "c": None,
                                      "p": 64, "conf": "task_acks_late=True"},
    "floodgate defaults --prefetch-multiplier 64": {"app": "config", "pool": None, "c": None,
                                                    "p": 64},
    "floodgate defaults -E (events on, as while Flower watches)":
        {"app": "config", "pool": None, "c": None, "p": None, "extra": ("-E",)},
    "floodgate -P threads -c 2": {"app": "config", "pool": "threads", "c": 2, "p": None},
}


def _prefill_app(spec: dict):
    """A fast publisher for the worker's queue: no guard, no sent events, no confirms."""
    from celery import Celery

    from bench.harness.plain_app import QUEUE, make_plain_app, plain_transport
    from bench.harness.task_bodies import register

    if spec["app"] == "bench.harness.plain_app":
        app = make_plain_app(os.environ["BROKER_URL"], "prefill")
        app.conf.broker_transport_options = {}
        return app, QUEUE
    app = Celery("prefill", set_as_current=False)
    app.config_from_object("config.celeryconfig")
    app.conf.update(broker_transport=plain_transport(os.environ["BROKER_URL"]),
                    task_send_sent_event=False,
                    broker_transport_options={})
    register(app)
    return app, "fanout"


def _prefill(spec: dict, n: int, edge: int) -> str:
    from concurrent.futures import ThreadPoolExecutor

    app, queue = _prefill_app(spec)
    producers = Producers(app, size=4)
    lane = lambda k: [producers.send("bench.noop", (i, n, edge), queue)  # noqa: E731
                      for i in range(k, n, 4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lane, range(4)))
    producers.close()
    return queue


def _worker(spec: dict, queue: str) -> Worker:
    extra = ("--prefetch-multiplier", str(spec["p"])) if spec["p"] else ()
    extra += tuple(spec.get("extra", ()))
    env = dict(os.environ, BENCH_CONF=spec.get("conf", ""))
    return Worker(env, "drain", queue, app=spec["app"], pool=spec["pool"],
                  concurrency=spec["c"], extra=extra)


def _wait_edges(count: int, timeout_s: float, unacked: list) -> dict:
    client = brokers.redis_client()
    deadline = time.time() + timeout_s
    edges = {}
    while time.time() < deadline:
        edges = read_edges()
        if len(edges) >= count:
            break
        if os.environ["BENCH_BROKER"] == "redis":
            unacked.append(client.hlen("unacked"))
        time.sleep(0.1)
    return edges


def _partial(edges: dict, depth, n: int) -> dict:
    """A worker that did not finish in time: rate from what left the queue since its start."""
    left = depth()
    first = min(edges.values(), default=None)
    if first is None:
        return {"rate": 0.0, "incomplete": True, "left": left}
    return {"rate": (n - left) / (time.time() - first), "incomplete": True, "left": left}


def _rate_from_edges(edges: dict, n: int, edge: int) -> dict:
    first = [t for i, t in edges.items() if i < edge]
    last = [t for i, t in edges.items() if i >= n - edge]
    drain_s = max(last) - min(first)
    return {"rate": n / drain_s, "drain_s": drain_s}


def phase_drain(params: dict) -> dict:
    spec, n, edge = params["spec"], params["n"], params["edge"]
    broker = os.environ["BENCH_BROKER"]
    clear_runs()
    queue = _prefill(spec, n, edge)
    depth = brokers.Depth(broker, queue)
    unacked: list[int] = []
    with _worker(spec, queue):
        edges = _wait_edges(2 * edge, params["timeout_s"], unacked)
        done = len(edges) >= 2 * edge
        result = _rate_from_edges(edges, n, edge) if done else _partial(edges, depth, n)
    brokers.purge(broker, queue)
    depth.close()
    from config.queues import PREFETCH

    return {**result, "max_unacked": max(unacked, default=None),
            "fanout_prefetch": PREFETCH["fanout"]}


def _drain(broker: str, spec: dict, n: int, timeout_s: float = 90) -> dict:
    brokers.reset(broker)
    return run_phase("e.drain", broker, "fanout=100000",
                     {"spec": spec, "n": n, "edge": EDGE, "timeout_s": timeout_s})


def _alternate(broker: str, group: dict, n: int, reps: int) -> tuple[dict, set]:
    """Rates per configuration, and the fanout PREFETCH values the workers ran with."""
    rates: dict[str, list[float]] = {name: [] for name in group}
    prefetch = set()
    for _ in range(reps):
        for name, spec in group.items():
            res = _drain(broker, spec, n)
            rates[name].append(res["rate"] or 0)
            prefetch.add(res.get("fanout_prefetch"))
    return rates, prefetch


def _compare(rates: dict, fastest: str, name: str) -> dict:
    """Median over median, and the median of the per-rep ratios."""
    ratio = median(rates[name]) / median(rates[fastest])
    paired = median([x / p for x, p in zip(rates[name], rates[fastest]) if p])
    return {"ratio": rnd(ratio), "paired": rnd(paired), "pass": ratio >= TARGET}


def _diagnose(broker: str, n: int, reference: float) -> dict:
    out = {}
    for name, spec in DIAGNOSTIC.items():
        res = _drain(broker, spec, n, timeout_s=45)
        out[name] = {"rate": rnd(res["rate"], 1), "ratio": rnd((res["rate"] or 0) / reference),
                     "max_unacked": res.get("max_unacked"),
                     "incomplete": res.get("incomplete", False)}
    return out


def run(broker: str, n: int = N, reps: int = 5, diagnose: bool = True,
        n_diagnostic: int = 2500) -> dict:
    screen = {name: _drain(broker, spec, n_diagnostic) for name, spec in PLAIN.items()}
    fastest = max(screen, key=lambda k: screen[k]["rate"] or 0)
    proposed = next(iter(PROPOSED))
    rates, prefetch = _alternate(broker, {fastest: PLAIN[fastest], **DEFAULT, **PROPOSED},
                                 n, reps)
    default = _compare(rates, fastest, "floodgate defaults")
    change = _compare(rates, fastest, proposed)
    return {
        "broker": broker, "n": n, "reps": reps, "target": TARGET, "n_diagnostic": n_diagnostic,
        "fanout_prefetch": sorted(p for p in prefetch if p is not None),
        "screen": {k: rnd(v["rate"], 1) for k, v in screen.items()},
        "screen_max_unacked": {k: v.get("max_unacked") for k, v in screen.items()},
        "plain_fastest": fastest, "rates": {k: [rnd(x, 1) for x in v] for k, v in rates.items()},
        "median_rate": {k: rnd(median(v), 1) for k, v in rates.items()},
        "ratio": default["ratio"], "ratio_paired": default["paired"], "pass": default["pass"],
        "proposed": proposed, "proposed_ratio": change["ratio"],
        "proposed_ratio_paired": change["paired"], "proposed_pass": change["pass"],
        "diagnostics": _diagnose(broker, n_diagnostic, median(rates[fastest])) if diagnose else {},
    }
