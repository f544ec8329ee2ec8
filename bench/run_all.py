"""Run the benchmarks and write bench/RESULTS.md.

    python -m bench.run_all [--only b] [--broker redis] [--quick] [--report-only]

Defaults: experiments a, b, e on both brokers; c and d on Redis (d needs Redis).
Each experiment's summary goes to bench/results/<exp>_<broker>.json and its plot
to bench/plots/; the report is rebuilt from every summary present, so running
one experiment refreshes only its own section.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from bench import exp_a, exp_b, exp_c, exp_d, exp_e, figures, lock, report
from bench.env import OUT, RESULTS, ensure_vhost
from bench.machine import machine_meta
from bench.notes import NOTES

META = RESULTS / "meta.json"
DEFAULT_BROKERS = {"a": ("redis", "amqp"), "b": ("redis", "amqp"), "c": ("redis",),
                   "d": ("redis",), "e": ("redis", "amqp")}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    p.add_argument("--only", default="a,b,c,d,e", help="comma-separated experiments (a-e)")
    p.add_argument("--broker", choices=("redis", "amqp", "both"), default=None,
                   help="run on this broker only (default: each experiment's defaults)")
    p.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild RESULTS.md (and plots, from bench/out/) without running anything")
    return p.parse_args(argv)


def brokers_for(exp: str, choice: str | None) -> tuple[str, ...]:
    if choice is None:
        return DEFAULT_BROKERS[exp]
    wanted = ("redis", "amqp") if choice == "both" else (choice,)
    return tuple(b for b in wanted if not (exp == "d" and b == "amqp"))


def run_a(broker, quick, capacity):
    return exp_a.run(broker, **({"n": 500, "reps": 3, "refusals": 50} if quick else {}))


def run_b(broker, quick, capacity):
    r = exp_b.run(broker, **({"duration_s": 15} if quick else {}))
    capacity[broker] = r["capacity_per_s"]
    return r


def run_c(broker, quick, capacity):
    """Meter warm (an overload under way) is the result; a run after light traffic beside it."""
    t = time.time()
    trickle = exp_c.run(broker, capacity=capacity.get(broker), prelude="trickle",
                        duration_s=15 if quick else 30)
    capacity.setdefault(broker, trickle["capacity_per_s"])
    save("c", f"{broker}_trickle", {**trickle, "quick": quick,
                                    "wall_s": round(time.time() - t, 1)})
    return exp_c.run(broker, capacity=capacity[broker], **({"duration_s": 20} if quick else {}))


def run_d(broker, quick, capacity):
    r = exp_d.run(broker, capacity=capacity.get(broker), **({"duration_s": 24} if quick else {}))
    capacity.setdefault(broker, r["capacity_one_worker_per_s"])
    return r


def run_e(broker, quick, capacity):
    return exp_e.run(broker, **({"n": 2000, "reps": 1, "n_diagnostic": 1000} if quick else {}))


RUNNERS = {"a": run_a, "b": run_b, "c": run_c, "d": run_d, "e": run_e}


def save(exp: str, broker: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{exp}_{broker}.full.json").write_text(json.dumps(result))
    (RESULTS / f"{exp}_{broker}.json").write_text(json.dumps(strip(result), indent=1))
    figures.draw(f"{exp}_{broker}", result)


def strip(value):
    """Drop the raw time series (kept in bench/out/) from a summary."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k != "series"}
    return value


def main(argv=None) -> None:
    args = parse(argv)
    if args.report_only:
        meta = json.loads(META.read_text()) if META.exists() else {}
        figures.redraw_all()
        report.write(meta, NOTES)
        return
    me = lock.acquire()
    try:
        run(args, argv, me)
    finally:
        lock.release(me)


def run(args, argv, me: str) -> None:
    meta = machine_meta()
    start, capacity = time.time(), {}
    ensure_vhost()
    for exp in [e.strip() for e in args.only.split(",") if e.strip()]:
        for broker in brokers_for(exp, args.broker):
            lock.refresh(me)
            t = time.time()
            print(f"[bench] ({exp}) on {broker} ...", flush=True)
            result = RUNNERS[exp](broker, args.quick, capacity)
            result.update(wall_s=round(time.time() - t, 1), quick=args.quick)
            save(exp, broker, result)
            print(f"[bench] ({exp}) on {broker} done in {result['wall_s']} s", flush=True)
    meta.update(machine_meta(end=True), wall_min=round((time.time() - start) / 60, 1),
                command="python -m bench.run_all " + " ".join(argv or sys.argv[1:]))
    META.write_text(json.dumps(meta, indent=1))
    report.write(meta, NOTES)
    print(f"[bench] wrote bench/RESULTS.md in {meta['wall_min']} min", flush=True)


if __name__ == "__main__":
    main()
