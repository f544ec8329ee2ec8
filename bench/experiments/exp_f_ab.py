"""(f) side by side: commits alternated round by round, medians of each measure.

    python -m bench.experiments.exp_f_ab --refs b2d5c7b,HEAD [--rounds 3] [--duration 20]
        [--stack make-up]

One (f) run (bench/experiments/exp_f.py: calibration, 3x and 10x, item 4) per commit per
round, each on a stack of its own built from that commit's code (``git archive``); the
order of the commits flips every round. One (f) run's ratio moves by 0.2 from one stack
to the next here (the drain alone of stacks started alike spans 45 to 91 jobs/s), so a
change is judged by medians over rounds. Prints each run as it ends, then the medians;
the runs go to bench/out/f_ab_<stack>.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess

from bench.experiments import exp_f
from bench.harness.env import OUT, ROOT

MEASURES = (("completion_vs_drain_alone", "completed / drain alone"),
            ("lat_202_p99_ms", "202 p99 (ms)"), ("lat_503_p99_ms", "503 p99 (ms)"),
            ("wait_p99_s", "wait p99 (s)"), ("wait_bound_s", "wait bound (s)"))


def summary(out: dict) -> dict:
    row = {"drain_alone_per_s": out["drain_rate_per_s"],
           "refusals_per_s": out["refusals"].get("refusals_per_s"),
           "api_cpu_ms_per_refusal": out["refusals"].get("api_cpu_ms_per_refusal")}
    for phase in ("x3", "x10"):
        row.update({f"{phase} {key}": out[phase][key] for key, _ in MEASURES})
    return row


def medians(runs: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.experiments.exp_f_ab", description=__doc__)
    p.add_argument("--refs", required=True, help="comma-separated commits")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=20, help="seconds per overload phase")
    p.add_argument("--stack", default="make-up", choices=exp_f.STACKS)
    args = p.parse_args(argv)
    refs = [subprocess.run(["git", "rev-parse", "--short", r], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.strip()
            for r in args.refs.split(",")]
    runs: dict[str, list[dict]] = {r: [] for r in refs}
    for i in range(args.rounds):
        for ref in refs if i % 2 == 0 else refs[::-1]:
            row = summary(exp_f.run(args.stack, duration_s=args.duration, code_ref=ref,
                                    refusal_s=5))
            runs[ref].append(row)
            print(f"[ab] round {i + 1} {ref}: {json.dumps(row)}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"f_ab_{args.stack}.json").write_text(json.dumps(runs, indent=1))
    for ref, rows in runs.items():
        print(f"[ab] medians of {len(rows)} on {ref}: {json.dumps(medians(rows))}")


if __name__ == "__main__":
    main()
