"""(submit) Async submission (issue 21 items 4 and 6).

**Throughput** (item 6): one process, 64 concurrent submitters, each system measured for
``--duration`` seconds after ``--warmup`` seconds (connections made, queues declared),
``--rounds`` rounds with the systems' order rotated, medians reported:

* ``submit_async``: 64 coroutines on one asyncio loop awaiting
  ``celery_floodgate.aio.submit_async`` (Redis: redis.asyncio and the guard's Lua;
  RabbitMQ: aio-pika, publisher confirms pipelined on one channel);
* ``.delay() threads``: 64 threads calling ``.delay()`` on the same Floodgate-guarded
  Celery app (Celery's defaults, so its producer pool of 10 connections; RabbitMQ with
  the guard's publisher confirms);
* ``dramatiq threads``: 64 threads calling Dramatiq's ``send`` (RabbitMQ:
  ``confirm_delivery=True``);
* ``arq`` (Redis only): 64 coroutines awaiting ``enqueue_job``, from a venv of its own
  (arq pins redis<6): ``ARQ_PYTHON``, default /tmp/arq-venv/bin/python
  (``python -m venv /tmp/arq-venv && /tmp/arq-venv/bin/pip install arq``).

The guard is on: the queue is bounded at 1,000,000 (the largest limit; nothing is
refused), and emptied before every measurement (Redis db 3 flushed; the RabbitMQ vhost
``floodgate_bench_submit`` deleted and made again). No worker runs. Each measurement is a
fresh process (bench/harness/submit_load.py, bench/harness/arq_submit.py): tasks per
second, and the publisher's CPU per task (its process CPU time ÷ tasks in the window).

**Bench (f) on both submit paths** (item 4, ``--part f``): exp_f on make up's stack and
on the RabbitMQ one, once with ``API_SUBMIT_PATH=async`` and once with ``threads`` per
round, the order alternated, same commit; medians of the rounds.

    python -m bench.experiments.exp_submit --part throughput [--broker redis,amqp]
    python -m bench.experiments.exp_submit --part f [--stack make-up,prod] [--f-duration 60]
    python -m bench.run_all --only submit            # both parts, both brokers and stacks
    python -m bench.experiments.exp_submit --section  # RESULTS.md's tables, from the summaries
Summaries: bench/results/items/submit_<broker or stack>.json; raw runs in bench/out/.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.harness.env import OUT, ROOT, rabbitmqctl
from bench.harness.stats import rnd

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
ARQ_PYTHON = os.environ.get("ARQ_PYTHON", "/tmp/arq-venv/bin/python")
REDIS_URL = "redis://127.0.0.1:6379/3"  # no test suite or other bench uses db 3
VHOST = "floodgate_bench_submit"
AMQP_URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
LIMIT = 1_000_000  # the guard's largest limit: high enough that nothing is refused
CONCURRENCY, DURATION_S, WARMUP_S, ROUNDS = 64, 10.0, 2.0, 3
SYSTEMS = {"redis": ("submit_async", "delay_threads", "dramatiq_threads", "arq"),
           "amqp": ("submit_async", "delay_threads", "dramatiq_threads")}
LABELS = {"submit_async": "`submit_async`, 64 coroutines",
          "delay_threads": "`.delay()`, 64 threads",
          "dramatiq_threads": "Dramatiq `send`, 64 threads",
          "arq": "arq `enqueue_job`, 64 coroutines"}
TARGETS = {"async_vs_delay": 2.0, "async_vs_arq": 1.0}
F_STACKS = ("make-up", "prod")
F_PATHS = ("async", "threads")
#: exp_f's RabbitMQ stack runs on names of this run's own while (f) runs here.
F_NAMES = {"PROD_VHOST": "floodgate_bench_f21", "PROD_DB": "floodgate_bench_f21",
           "PROD_REDIS": "redis://127.0.0.1:6379/4"}
SERVERS = {"redis": "redis-server", "amqp": "beam.smp"}


def log(msg: str) -> None:
    print(f"[submit] {time.strftime('%H:%M:%S')} {msg}", flush=True)


# --------------------------------------------------------------------------- throughput

def reset(broker: str) -> None:
    """Empty what the last measurement left: db 3 (broker, meter), and the vhost."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    if broker == "amqp":
        rabbitmqctl("delete_vhost", VHOST)
        rabbitmqctl("add_vhost", VHOST)
        rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")


def check_empty() -> None:
    import redis

    n = redis.Redis.from_url(REDIS_URL).dbsize()
    if n:
        raise RuntimeError(f"{REDIS_URL} holds {n} keys this run did not make; bench (submit) "
                           "flushes its Redis db, so it needs an empty one: change "
                           "exp_submit.REDIS_URL")


def server_pids(broker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", SERVERS[broker]], capture_output=True, text=True,
                         check=False)
    return [int(p) for p in out.stdout.split()]


def measure(broker: str, system: str, duration_s: float, warmup_s: float,
            concurrency: int) -> dict:
    spec = {"system": system, "broker": broker,
            "broker_url": REDIS_URL if broker == "redis" else AMQP_URL, "meter_url": REDIS_URL,
            "limit": LIMIT, "concurrency": concurrency, "warmup_s": warmup_s,
            "duration_s": duration_s, "server_pids": server_pids(broker)}
    if system == "arq":
        if not Path(ARQ_PYTHON).exists():
            raise RuntimeError(f"no arq venv at {ARQ_PYTHON}: python -m venv /tmp/arq-venv && "
                               "/tmp/arq-venv/bin/pip install arq (or set ARQ_PYTHON)")
        argv = [ARQ_PYTHON, "-m", "bench.harness.arq_submit", json.dumps(spec)]
    else:
        argv = [PY, "-m", "bench.harness.submit_load", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=warmup_s + duration_s + 120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{system} on {broker} failed (rc {proc.returncode}): "
                           f"{proc.stderr[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_throughput(broker: str, rounds: int = ROUNDS, duration_s: float = DURATION_S,
                   warmup_s: float = WARMUP_S, concurrency: int = CONCURRENCY,
                   systems: tuple[str, ...] | None = None) -> dict:
    t0 = time.time()
    systems = tuple(s for s in SYSTEMS[broker] if not systems or s in systems)
    check_empty()
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    try:
        for r in range(rounds):
            order = systems[r % len(systems):] + systems[:r % len(systems)]
            for system in order:
                reset(broker)
                one = measure(broker, system, duration_s, warmup_s, concurrency)
                runs[system].append(one)
                log(f"{broker} round {r + 1} {system}: {one['tasks_per_s']:.0f} tasks/s, "
                    f"{one['cpu_us_per_task']:.0f} µs CPU/task, errors {one['errors']}")
    finally:
        reset(broker)
        if broker == "amqp":
            rabbitmqctl("delete_vhost", VHOST)
    out = {"part": "throughput", "broker": broker, "rounds": rounds, "duration_s": duration_s,
           "warmup_s": warmup_s, "concurrency": concurrency, "limit": LIMIT,
           "commit": _commit(), "versions": versions(), "cores": os.cpu_count(),
           "systems": {s: summary(rs) for s, rs in runs.items()}, "runs": runs}
    out["ratios"] = ratios(out["systems"])
    out["wall_s"] = rnd(time.time() - t0, 1)
    return out


def summary(runs: list[dict]) -> dict:
    med = lambda key: rnd(statistics.median(r[key] for r in runs if r[key] is not None), 1)  # noqa: E731
    return {"tasks_per_s": med("tasks_per_s"), "cpu_us_per_task": med("cpu_us_per_task"),
            "server_cpu_us_per_task": med("server_cpu_us_per_task"),
            "tasks_per_s_each": [rnd(r["tasks_per_s"], 1) for r in runs],
            "errors": sum(sum(r["errors"].values()) for r in runs)}


def ratios(systems: dict) -> dict:
    rate = {s: v["tasks_per_s"] for s, v in systems.items()}
    out = {}
    if rate.get("submit_async") and rate.get("delay_threads"):
        out["async_vs_delay"] = rnd(rate["submit_async"] / rate["delay_threads"], 2)
    if rate.get("submit_async") and rate.get("arq"):
        out["async_vs_arq"] = rnd(rate["submit_async"] / rate["arq"], 2)
    if rate.get("submit_async") and rate.get("dramatiq_threads"):
        out["async_vs_dramatiq"] = rnd(rate["submit_async"] / rate["dramatiq_threads"], 2)
    return out


def versions() -> dict:
    from importlib.metadata import version

    found = {n: version(n) for n in ("celery", "kombu", "dramatiq", "redis", "aio-pika")}
    if Path(ARQ_PYTHON).exists():
        arq = subprocess.run([ARQ_PYTHON, "-c", "from importlib.metadata import version as v; "
                              "print(v('arq'), v('redis'))"], capture_output=True, text=True)
        found["arq (its venv: arq, redis)"] = arq.stdout.strip()
    found["python"] = sys.version.split()[0]
    return found


def _commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "lib", "api", "tasks",
                            "config"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return head + (" + uncommitted changes in lib/api/tasks/config" if dirty else "")


# --------------------------------------------------------------------------- (f) by path

@contextlib.contextmanager
def _own_names():
    from bench.experiments import exp_f

    saved = {n: getattr(exp_f, n) for n in F_NAMES}
    for n, value in F_NAMES.items():
        setattr(exp_f, n, value)
    try:
        yield exp_f
    finally:
        for n, value in saved.items():
            setattr(exp_f, n, value)


#: (f)'s figures compared per path: name -> where in one exp_f result.
F_FIGURES = {
    "drain_rate_per_s": ("drain_rate_per_s",),
    "x3_completion": ("x3", "completion_vs_drain_alone"),
    "x3_wait_p99_s": ("x3", "wait_p99_s"), "x3_wait_bound_s": ("x3", "wait_bound_s"),
    "x3_503_p99_ms": ("x3", "lat_503_p99_ms"), "x3_202_p99_ms": ("x3", "lat_202_p99_ms"),
    "x3_api_cpu_share": ("x3", "api_cpu_share"),
    "x10_completion": ("x10", "completion_vs_drain_alone"),
    "x10_wait_p99_s": ("x10", "wait_p99_s"), "x10_wait_bound_s": ("x10", "wait_bound_s"),
    "x10_503_p99_ms": ("x10", "lat_503_p99_ms"), "x10_202_p99_ms": ("x10", "lat_202_p99_ms"),
    "x10_api_cpu_share": ("x10", "api_cpu_share"),
    "x10_refused_per_s": None, "x10_depth_max": ("x10", "depth_max"),
    "refusals_per_s": ("refusals", "refusals_per_s"),
    "api_cpu_ms_per_refusal": ("refusals", "api_cpu_ms_per_refusal"),
}


def _pick(result: dict, path: tuple | None, name: str):
    if name == "x10_refused_per_s":
        x10 = result.get("x10") or {}
        return x10["refused_503"] / x10["duration_s"] if x10.get("duration_s") else None
    for key in path:
        result = (result or {}).get(key)
    return result


def run_f(stack: str, rounds: int = 3, duration_s: float = 60, limit: int = 60) -> dict:
    t0 = time.time()
    runs: dict[str, list[dict]] = {p: [] for p in F_PATHS}
    with _own_names() as exp_f:
        if stack == "prod":
            check_f_redis_empty()
        for r in range(rounds):
            for path in (F_PATHS if r % 2 == 0 else F_PATHS[::-1]):
                log(f"(f) {stack} round {r + 1}: API_SUBMIT_PATH={path}")
                full = exp_f.run(stack, limit=limit, duration_s=duration_s, submit_path=path)
                OUT.mkdir(parents=True, exist_ok=True)
                (OUT / f"submit_f_{stack}_{path}_{r + 1}.full.json").write_text(json.dumps(full))
                runs[path].append(strip(full))
    out = {"part": "f", "stack": stack, "rounds": rounds, "duration_s": duration_s,
           "limit": limit, "commit": _commit(), "targets": exp_f.TARGETS,
           "paths": {p: f_summary(rs) for p, rs in runs.items()}, "runs": runs}
    out["wall_s"] = rnd(time.time() - t0, 1)
    return out


def check_f_redis_empty() -> None:
    import redis

    n = redis.Redis.from_url(F_NAMES["PROD_REDIS"]).dbsize()
    if n:
        raise RuntimeError(f"{F_NAMES['PROD_REDIS']} holds {n} keys; exp_f flushes it: "
                           "change exp_submit.F_NAMES")


def f_summary(runs: list[dict]) -> dict:
    out = {}
    for name, path in F_FIGURES.items():
        values = [v for v in (_pick(r, path, name) for r in runs) if v is not None]
        out[name] = rnd(statistics.median(values), 3) if values else None
        out[name + "_each"] = [rnd(v, 3) for v in values]
    cpu = [((r.get("x10") or {}).get("cpu_during_offer") or {}) for r in runs]
    parts: dict[str, list[float]] = {}
    for c in cpu:
        for part, share in (c.get("parts_cpu_share_of_one_core") or {}).items():
            parts.setdefault(part, []).append(share)
    out["x10_cpu_parts_share_of_one_core"] = {k: rnd(statistics.median(v), 3)
                                              for k, v in parts.items()}
    out["x10_cores_busy"] = rnd(statistics.median(
        [c["cores_busy"] for c in cpu if c.get("cores_busy") is not None] or [0]), 2)
    out["x10_others_cores"] = rnd(statistics.median(
        [c["others_cores"] for c in cpu if c.get("others_cores") is not None] or [0]), 2)
    out["other_5xx"] = sum((r.get(x) or {}).get("other_5xx", 0) for r in runs for x in ("x3", "x10"))
    depth = [(r.get(x) or {}).get("depth_max") for r in runs for x in ("x3", "x10")]
    out["depth_max_all"] = max([d for d in depth if d is not None], default=None)
    return out


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k != "series"}
    return value


# --------------------------------------------------------------------------- report

def _mark(ok) -> str:
    return "" if ok is None else (" ✓" if ok else " ✗")


def section(r: dict) -> str:
    return section_throughput(r) if r.get("part") == "throughput" else section_f(r)


def section_throughput(r: dict) -> str:
    broker = {"redis": "Redis", "amqp": "RabbitMQ (publisher confirms)"}[r["broker"]]
    lines = [f"### (issue 21) async submission: throughput on {broker}", "",
             f"One process, {r['concurrency']} concurrent submitters, {r['duration_s']:g} s "
             f"measured after {r['warmup_s']:g} s, medians of {r['rounds']} rounds (order "
             f"rotated); guard on (limit {r['limit']:,}, nothing refused), queue emptied "
             f"before each; no worker; commit {r['commit']}.", "",
             "| system | tasks/s | each round | publisher CPU per task | broker CPU per task |",
             "|---|---|---|---|---|"]
    for system, s in r["systems"].items():
        each = ", ".join(f"{x:,.0f}" for x in s["tasks_per_s_each"])
        lines.append(f"| {LABELS[system]} | {s['tasks_per_s']:,.0f} | {each} | "
                     f"{s['cpu_us_per_task']:.0f} µs | {s['server_cpu_us_per_task']:.0f} µs |")
    q = r["ratios"]
    said = [f"`submit_async` ÷ `.delay()` threads: **{q.get('async_vs_delay')}×** (target ≥ "
            f"{TARGETS['async_vs_delay']:g}×){_mark(_ge(q, 'async_vs_delay'))}"]
    if "async_vs_arq" in q:
        said.append(f"÷ arq: **{q['async_vs_arq']}×** (target ≥ {TARGETS['async_vs_arq']:g}×)"
                    f"{_mark(_ge(q, 'async_vs_arq'))}")
    if "async_vs_dramatiq" in q:
        said.append(f"÷ Dramatiq threads: {q['async_vs_dramatiq']}×")
    lines += ["", "; ".join(said) + "."]
    errors = {s: v["errors"] for s, v in r["systems"].items() if v["errors"]}
    lines += ["", f"Errors during the runs: {errors or 'none'}. Versions: " +
              ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".", "",
              f"Rerun: `python -m bench.experiments.exp_submit --part throughput --broker "
              f"{r['broker']}`"]
    return "\n".join(lines)


def _ge(ratios_: dict, key: str):
    return None if key not in ratios_ else ratios_[key] >= TARGETS[key]


def section_f(r: dict) -> str:
    name = {"make-up": "make up's stack (Valkey + PostgreSQL)",
            "prod": "the RabbitMQ stack (RabbitMQ + PostgreSQL + Redis results)"}[r["stack"]]
    a, t = r["paths"]["async"], r["paths"]["threads"]
    tg = r["targets"]
    n = min(len(a.get("drain_rate_per_s_each", [])), len(t.get("drain_rate_per_s_each", [])))
    lines = [f"### (issue 21) bench (f) by submit path: {name}", "",
             f"`API_SUBMIT_PATH=async` beside `threads`, same commit ({r['commit']}); limit "
             f"{r['limit']}, {r['duration_s']:g} s per overload phase, medians of {n} "
             "round(s), the paths alternated.", "",
             "| | async | threads | target |", "|---|---|---|---|",
             f"| drain alone (jobs/s) | {a['drain_rate_per_s']} | {t['drain_rate_per_s']} | |"]
    for x in ("x3", "x10"):
        f = x[1:] + "×"
        row = lambda label, key, fmt, target, ok: (  # noqa: E731
            f"| {f} {label} | {fmt(a[key])}{_mark(ok(a))} | {fmt(t[key])}{_mark(ok(t))} "
            f"| {target} |")
        lines += [
            row("completion ÷ drain alone", f"{x}_completion", str,
                f"≥ {tg['completion_ratio']}",
                lambda s: None if s[f"{x}_completion"] is None else
                s[f"{x}_completion"] >= tg["completion_ratio"]),
            row("p99 wait (s)", f"{x}_wait_p99_s",
                lambda v: str(v), f"≤ 1.1 × limit ÷ drain ({a[x + '_wait_bound_s']} / "
                                  f"{t[x + '_wait_bound_s']} s)",
                lambda s: None if s[f"{x}_wait_p99_s"] is None else
                s[f"{x}_wait_p99_s"] <= s[f"{x}_wait_bound_s"]),
            row("503 p99 (ms)", f"{x}_503_p99_ms", str, f"≤ {tg['p99_503_s'] * 1000:g}",
                lambda s: None if s[f"{x}_503_p99_ms"] is None else
                s[f"{x}_503_p99_ms"] <= tg["p99_503_s"] * 1000),
            row("202 p99 (ms)", f"{x}_202_p99_ms", str, f"≤ {tg['p99_202_s'] * 1000:g}",
                lambda s: None if s[f"{x}_202_p99_ms"] is None else
                s[f"{x}_202_p99_ms"] <= tg["p99_202_s"] * 1000),
            row("API process CPU share", f"{x}_api_cpu_share", str, "", lambda s: None),
        ]
    lines += [
        f"| 10× refusals answered per second | {a['x10_refused_per_s']} | "
        f"{t['x10_refused_per_s']} | |",
        f"| refusal capacity, worker paused (refusals/s) | {a['refusals_per_s']} | "
        f"{t['refusals_per_s']} | |",
        f"| API CPU per refusal (ms) | {a['api_cpu_ms_per_refusal']} | "
        f"{t['api_cpu_ms_per_refusal']} | |",
        f"| queue depth max (all phases) | {a['depth_max_all']} | {t['depth_max_all']} | "
        f"≤ {r['limit']} |",
        f"| other 5xx | {a['other_5xx']} | {t['other_5xx']} | 0 |", "",
        "CPU during the 10× offer, share of one core per part (median): async " +
        _parts(a) + f" (machine {a['x10_cores_busy']} of 2 cores busy); threads " + _parts(t) +
        f" (machine {t['x10_cores_busy']}).", "",
        f"Rerun: `python -m bench.experiments.exp_submit --part f --stack {r['stack']} "
        f"--f-rounds {r['rounds']} --f-duration {r['duration_s']:g}`"]
    return "\n".join(lines)


def _parts(s: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in s["x10_cpu_parts_share_of_one_core"].items())


# --------------------------------------------------------------------------- CLI

def run(target: str, quick: bool = False, **kw) -> dict:
    """One broker's throughput (redis, amqp) or one stack's (f) by path (make-up, prod)."""
    if target in F_STACKS:
        return run_f(target, rounds=kw.get("f_rounds", 1 if quick else 3),
                     duration_s=kw.get("f_duration", 10 if quick else 60))
    return run_throughput(target, rounds=1 if quick else kw.get("rounds", ROUNDS),
                          duration_s=3 if quick else kw.get("duration_s", DURATION_S))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.experiments.exp_submit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("throughput", "f", "both"), default="both")
    p.add_argument("--broker", default="redis,amqp")
    p.add_argument("--stack", default=",".join(F_STACKS))
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--duration", type=float, default=DURATION_S)
    p.add_argument("--warmup", type=float, default=WARMUP_S)
    p.add_argument("--systems", default="", help="comma-separated (default: all)")
    p.add_argument("--f-rounds", type=int, default=3)
    p.add_argument("--f-duration", type=float, default=60)
    p.add_argument("--no-save", action="store_true", help="print only (smoke runs)")
    p.add_argument("--section", action="store_true",
                   help="print the sections of the summaries in bench/results/items/, run nothing")
    args = p.parse_args(argv)
    if args.section:
        print(sections())
        return
    targets = []
    if args.part in ("throughput", "both"):
        targets += [b.strip() for b in args.broker.split(",") if b.strip()]
    if args.part in ("f", "both"):
        targets += [s.strip() for s in args.stack.split(",") if s.strip()]
    systems = tuple(s for s in args.systems.split(",") if s)
    for target in targets:
        if target in F_STACKS:
            r = run_f(target, rounds=args.f_rounds, duration_s=args.f_duration)
        else:
            r = run_throughput(target, rounds=args.rounds, duration_s=args.duration,
                               warmup_s=args.warmup, systems=systems or None)
        print(section(r), flush=True)
        if not args.no_save:
            save(target, r)


def sections() -> str:
    from bench.harness.env import RESULTS

    found = [RESULTS / "items" / f"submit_{t}.json" for t in (*SYSTEMS, *F_STACKS)]
    return "\n\n".join(section(json.loads(p.read_text())) for p in found if p.exists())


def save(target: str, result: dict) -> None:
    from bench.harness.env import RESULTS

    items = RESULTS / "items"
    items.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"submit_{target}.full.json").write_text(json.dumps(result))
    (items / f"submit_{target}.json").write_text(json.dumps(strip(result), indent=1))
    log(f"wrote bench/results/items/submit_{target}.json")


if __name__ == "__main__":
    main()
