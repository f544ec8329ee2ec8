"""(growth) Cost growth: submit latency and drain rate as the queue fills, and with 1-4 workers.

Queue ``fanout`` of Floodgate's app with limit ``L``; no-op jobs (``bench.noop``).

* **Submit latency vs depth, no worker**: the queue is emptied, then one thread submits
  one job at a time (``send_task``, what ``.delay()`` does) until it is full; each
  latency is binned by the depth it was submitted at (ten bins from 0 to L), then 50
  refusals at the limit.
* **Drain rate vs depth, 1 to 4 workers**: the queue is filled to L (batch
  submission) while ``w`` workers (``celery -A config worker -Q fanout -I bench.harness.tasks``,
  Floodgate's pool, one task at a time each), started and answering pings before, are
  stopped (SIGSTOP); they resume (SIGCONT) and the depth is read at 50 Hz until the
  queue is empty while a probe thread submits one job every 50 ms (its
  latency binned by depth, as above). Drained(t) = L - depth(t) + probes admitted by
  t; the drain rate in each depth bin is what drained while the depth was in it over
  the time it spent there; the overall rate is L / (empty - first drop).
* Flatness: the highest bin over the lowest (latency p50; drain rate), per curve. 1.0
  is flat.
"""
from __future__ import annotations

import os
import signal
import threading
import time

from bench.harness import broker as brokers
from bench.harness.driver import floodgate_app
from bench.harness.env import PLOTS, phase_env
from bench.harness.procs import Worker, run_phase

TASK = "bench.noop"
BINS = 10
PROBE_EVERY_S = 0.05
SAMPLE_EVERY_S = 0.02
#: A depth bin's drain rate is shown when the queue spent at least this long in it.
MIN_BIN_S = 0.04


def _limits(limit: int) -> str:
    return f"fanout={limit},aggregation=100,default=5000"


def _bin(depth: int, limit: int) -> int:
    return min(BINS - 1, max(0, depth * BINS // max(1, limit)))


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def phase_latency(params: dict) -> dict:
    """One submit at a time from empty to full; then refusals at the limit."""
    from celery_floodgate import QueueFull

    broker, limit = os.environ["BENCH_BROKER"], params["limit"]
    app = floodgate_app()
    for i in range(50):  # warm-up: connection, declarations
        app.send_task(TASK, args=(i, 0, 0), queue="fanout", ignore_result=True)
    brokers.purge(broker, "fanout")
    samples, refusals = [], []
    depth = 0
    while depth < limit:
        start = time.perf_counter()
        try:
            app.send_task(TASK, args=(depth, 0, 0), queue="fanout", ignore_result=True)
        except QueueFull:
            break
        samples.append((depth, (time.perf_counter() - start) * 1000))
        depth += 1
    for _ in range(50):
        start = time.perf_counter()
        try:
            app.send_task(TASK, args=(0, 0, 0), queue="fanout", ignore_result=True)
        except QueueFull:
            refusals.append((time.perf_counter() - start) * 1000)
    brokers.purge(broker, "fanout")
    return {"samples": samples, "refusal_ms": refusals, "reached": depth}


def phase_fill(params: dict) -> dict:
    from celery_floodgate.batch import submit_many

    broker, n = os.environ["BENCH_BROKER"], params["n"]
    app = floodgate_app()
    brokers.purge(broker, "fanout")
    accepted = 0
    for first in range(0, n, 500):
        r = submit_many(app, TASK, [(i, 0, 0) for i in range(first, min(n, first + 500))],
                        queue="fanout", ignore_result=True)
        accepted += len(r.accepted)
    return {"accepted": accepted, "depth": brokers.Depth(broker, "fanout")()}


def phase_ready(params: dict) -> dict:
    """Wait until every worker answers a ping (they start before the queue is filled)."""
    app = floodgate_app()
    deadline = time.monotonic() + params.get("timeout_s", 120)
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=1.0) or []
        if len(replies) >= params["workers"]:
            return {"workers": len(replies)}
        time.sleep(0.5)
    raise RuntimeError(f"only {len(replies)} of {params['workers']} workers answered")


def phase_drain(params: dict) -> dict:
    """Resume the stopped workers, sample the depth until empty; probe submissions meanwhile."""
    import signal

    from celery_floodgate import QueueFull

    broker, timeout_s = os.environ["BENCH_BROKER"], params["timeout_s"]
    app = floodgate_app()
    depth = brokers.Depth(broker, "fanout")
    try:  # connect first (the queue is full: a refusal is as good)
        app.send_task(TASK, args=(0, 0, 0), queue="fanout", ignore_result=True)
    except QueueFull:
        pass
    series0 = depth()
    t0 = time.time()
    for pgid in params.get("pgids", []):  # the workers were stopped while the queue filled
        os.killpg(pgid, signal.SIGCONT)
    series: list[tuple[float, int]] = []
    probes: list[tuple[float, int, float, bool]] = []
    current = {"depth": series0}
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            sent = time.time()
            start = time.perf_counter()
            try:
                app.send_task(TASK, args=(0, 0, 0), queue="fanout", ignore_result=True)
                ok = True
            except QueueFull:
                ok = False
            probes.append((sent - t0, current["depth"], (time.perf_counter() - start) * 1000, ok))
            stop.wait(PROBE_EVERY_S)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    series.append((0.0, series0))
    try:
        while time.time() - t0 < timeout_s:
            d = depth()
            current["depth"] = d
            series.append((time.time() - t0, d))
            if d == 0 and len(series) > 5:
                break
            time.sleep(SAMPLE_EVERY_S)
    finally:
        stop.set()
        thread.join(5)
        depth.close()
    return {"series": series, "probes": probes}


def _latency_bins(samples, limit: int) -> list[dict]:
    bins: list[list[float]] = [[] for _ in range(BINS)]
    for d, ms in samples:
        bins[_bin(d, limit)].append(ms)
    return [{"depth_from": i * limit // BINS, "n": len(b),
             "p50_ms": _round(_pct(b, 0.5)), "p99_ms": _round(_pct(b, 0.99))}
            for i, b in enumerate(bins)]


def _round(x, digits=3):
    return None if x is None else round(x, digits)


def _drain_curve(series, probes, limit: int) -> dict:
    """Drain rate per depth bin, and overall, from the depth series after the first drop."""
    start_depth = series[0][1] if series else 0
    first = next((i for i, (_, d) in enumerate(series) if d < start_depth), None)
    if first is None:
        return {"overall_per_s": None, "bins": []}
    admitted = sorted(t for t, _, _, ok in probes if ok)

    def drained(t: float, d: int) -> int:
        return start_depth - d + sum(1 for x in admitted if x <= t)

    t_start = series[first - 1][0] if first else series[0][0]
    end = next((i for i in range(first, len(series)) if series[i][1] == 0), len(series) - 1)
    t_end = series[end][0]
    total = drained(t_end, series[end][1])
    spent = [0.0] * BINS
    done = [0] * BINS
    for i in range(max(1, first), end + 1):
        (ta, da), (tb, db) = series[i - 1], series[i]
        b = _bin(da, limit)
        spent[b] += tb - ta
        done[b] += drained(tb, db) - drained(ta, da)
    bins = [{"depth_from": i * limit // BINS, "seconds": round(spent[i], 2),
             "rate_per_s": round(done[i] / spent[i], 1) if spent[i] >= MIN_BIN_S else None}
            for i in range(BINS)]
    return {"overall_per_s": round(total / (t_end - t_start), 1) if t_end > t_start else None,
            "drain_s": round(t_end - t_start, 2), "bins": bins}


def _flatness(values) -> float | None:
    values = [v for v in values if v]
    return round(max(values) / min(values), 2) if len(values) >= 2 else None


def run(broker: str, quick: bool = False, limit: int | None = None,
        workers=(1, 2, 3, 4)) -> dict:
    limit = limit or (2000 if quick else 10000)
    brokers.reset(broker)
    limits = _limits(limit)
    lat = run_phase("growth.latency", broker, limits, {"limit": limit})
    result = {"broker": broker, "limit": limit, "no_worker": {
        "reached": lat["reached"], "latency_bins": _latency_bins(lat["samples"], limit),
        "refusal_p50_ms": _round(_pct(lat["refusal_ms"], 0.5)),
        "refusal_p99_ms": _round(_pct(lat["refusal_ms"], 0.99))}, "workers": {}}
    result["no_worker"]["latency_flatness"] = _flatness(
        b["p50_ms"] for b in result["no_worker"]["latency_bins"])
    for w in workers:
        env = phase_env(broker, limits)
        brokers.purge(broker, "fanout")
        procs = [Worker(env, f"growth-{w}-{i}", "fanout", pool=None, concurrency=None)
                 for i in range(w)]
        try:
            # Ready, then stopped (SIGSTOP) while the queue fills; the drain phase resumes them.
            run_phase("growth.ready", broker, limits, {"workers": w})
            for p in procs:
                p.signal(signal.SIGSTOP)
            fill = run_phase("growth.fill", broker, limits, {"n": limit})
            drain = run_phase("growth.drain", broker, limits,
                              {"timeout_s": 60 if quick else 300,
                               "pgids": [p.pid for p in procs]})
        finally:
            for p in procs:
                p.signal(signal.SIGCONT)
                p.stop()
        brokers.purge(broker, "fanout")
        curve = _drain_curve(drain["series"], drain["probes"], limit)
        probes = [(d, ms) for _, d, ms, ok in drain["probes"] if ok]
        result["workers"][str(w)] = {
            "filled": fill["depth"], **curve,
            "rate_flatness": _flatness(b["rate_per_s"] for b in curve["bins"]),
            "probe_bins": _latency_bins(probes, limit),
            "probes_refused": sum(1 for *_, ok in drain["probes"] if not ok),
            "series": drain["series"]}
        result["workers"][str(w)]["probe_p50_ms"] = _round(_pct([ms for _, ms in probes], 0.5))
    result["plot"] = plot(result)
    return result


def plot(r: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limit = r["limit"]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 4))
    mid = lambda b: b["depth_from"] + limit / BINS / 2  # noqa: E731
    nb = r["no_worker"]["latency_bins"]
    a1.plot([mid(b) for b in nb if b["p50_ms"]], [b["p50_ms"] for b in nb if b["p50_ms"]],
            "o-", label="no worker (filling), p50")
    a1.plot([mid(b) for b in nb if b["p99_ms"]], [b["p99_ms"] for b in nb if b["p99_ms"]],
            "o--", label="no worker (filling), p99")
    for w, wr in r["workers"].items():
        pb = [b for b in wr["probe_bins"] if b["p50_ms"]]
        a1.plot([mid(b) for b in pb], [b["p50_ms"] for b in pb], ".-",
                label=f"{w} worker(s) draining, p50")
        bins = [b for b in wr["bins"] if b["rate_per_s"]]
        a2.plot([mid(b) for b in bins], [b["rate_per_s"] for b in bins], "o-",
                label=f"{w} worker(s)")
    a1.set(xlabel="queue depth at submit", ylabel="submit latency (ms)",
           title=f"submit latency vs depth - {r['broker']}")
    a1.set_ylim(bottom=0)
    a1.legend(fontsize=7)
    a2.set(xlabel="queue depth", ylabel="drain rate (jobs/s)",
           title=f"drain rate vs depth - {r['broker']}")
    a2.set_ylim(bottom=0)
    a2.legend(fontsize=7)
    ws = list(r["workers"])
    a3.bar(ws, [r["workers"][w]["overall_per_s"] or 0 for w in ws], color="tab:blue")
    a3.set(xlabel="worker processes", ylabel="drain rate (jobs/s)",
           title=f"drain rate vs workers (limit {limit})")
    PLOTS.mkdir(parents=True, exist_ok=True)
    name = f"growth_{r['broker']}.png"
    fig.tight_layout()
    fig.savefig(PLOTS / name, dpi=80)
    plt.close(fig)
    return f"plots/{name}"


RERUN = ".venv/bin/python -m bench.run_all --only growth --broker {broker}"


def section(r: dict) -> str:
    head = ("## (growth) Cost growth with queue depth and workers\n\n" +
            __doc__.split("\n", 2)[2].strip() + "\n\n") if r["broker"] == "redis" else ""
    nw = r["no_worker"]
    lat_row = " | ".join(str(b["p50_ms"]) for b in nw["latency_bins"])
    rows = [f"| no worker: submit p50 (ms) | {lat_row} | {nw['latency_flatness']} |"]
    for w, wr in r["workers"].items():
        rows.append(f"| {w} worker(s): drain rate (jobs/s) | " + " | ".join(
            str(b["rate_per_s"] or "-") for b in wr["bins"]) + f" | {wr['rate_flatness']} |")
        rows.append(f"| {w} worker(s): probe submit p50 (ms) | " + " | ".join(
            str(b["p50_ms"] or "-") for b in wr["probe_bins"]) + " | |")
    header = "| depth from | " + " | ".join(str(b["depth_from"]) for b in nw["latency_bins"]) + \
        " | highest / lowest |\n|" + "---|" * (BINS + 2)
    overall = ", ".join(f"{w}: {wr['overall_per_s']}" for w, wr in r["workers"].items())
    quick = "\n\n_A `--quick` smoke run, not a real measurement._" if r.get("quick") else ""
    return f"""{head}### (growth) {r['broker']}, limit {r['limit']}

{header}
{chr(10).join(rows)}

Refusal at the limit: p50 {nw['refusal_p50_ms']} ms, p99 {nw['refusal_p99_ms']} ms.
Overall drain rate by workers (jobs/s): {overall}.

![cost growth]({r['plot']})

Rerun: `{RERUN.format(broker=r['broker'])}`{quick}"""
