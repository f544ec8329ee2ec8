"""(f) side by side: commits alternated round by round, medians of each measure.

    python -m bench.experiments.exp_f_ab --refs b2d5c7b,HEAD [--rounds 3] [--duration 20]
        [--stack make-up]
    python -m bench.experiments.exp_f_ab --refs worktree,63dd694     # uncommitted work vs a commit

One (f) run (bench/experiments/exp_f.py: calibration, 3x and 10x, item 4) per commit per
round, each on a stack of its own built from that commit's code (``git archive``; the
ref ``worktree`` is the work tree as it is, uncommitted changes included); the order of
the commits flips every round. One (f) run's ratio moves by 0.2 from one stack to the
next here (the drain alone of stacks started alike spans 45 to 91 jobs/s), so a change
is judged by medians over rounds. Prints each run as it ends, then the medians and
spreads; the runs go to bench/out/f_ab_<stack>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess

from bench.experiments import exp_f
from bench.harness.env import OUT, ROOT

WORKTREE = "worktree"
MEASURES = (("completion_vs_drain_alone", "completed / drain alone"),
            ("lat_202_p99_ms", "202 p99 (ms)"), ("lat_503_p50_ms", "503 p50 (ms)"),
            ("lat_503_p99_ms", "503 p99 (ms)"),
            ("wait_p99_s", "wait p99 (s)"), ("wait_bound_s", "wait bound (s)"))


def summary(out: dict) -> dict:
    row = {"drain_alone_per_s": out["drain_rate_per_s"],
           "refusals_per_s": out["refusals"].get("refusals_per_s"),
           "api_cpu_ms_per_refusal": out["refusals"].get("api_cpu_ms_per_refusal"),
           "item4_503_p99_ms": out["refusals"].get("lat_503_p99_ms")}
    for phase in ("x3", "x10"):
        row.update({f"{phase} {key}": out[phase][key] for key, _ in MEASURES})
    return row


def medians(runs: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]
            if all(r.get(k) is not None for r in runs)}


def spreads(runs: list[dict]) -> dict:
    """[min, max] of each measure over the runs."""
    return {k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in runs[0]
            if all(r.get(k) is not None for r in runs)}


def short(ref: str) -> str:
    if ref == WORKTREE:
        return ref
    return subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def alternate(stack: str, refs: list[str], rounds: int, duration_s: float,
              refusal_s: float = 5) -> dict[str, list[dict]]:
    """(f) on each ref, ``rounds`` times, the order flipped every round; each row carries
    the machine's load average when its run ended."""
    runs: dict[str, list[dict]] = {r: [] for r in refs}
    for i in range(rounds):
        for ref in refs if i % 2 == 0 else refs[::-1]:
            out = exp_f.run(stack, duration_s=duration_s, refusal_s=refusal_s,
                            code_ref=None if ref == WORKTREE else ref)
            row = {**summary(out), "load_1min": round(os.getloadavg()[0], 2),
                   "others_cores_x10": out["x10"]["cpu_during_offer"].get("others_cores"),
                   "auth": out.get("auth"), "commit": out["commit"]}
            runs[ref].append(row)
            print(f"[ab] round {i + 1} {ref}: {json.dumps(row)}", flush=True)
    return runs


def numeric(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in rows]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.experiments.exp_f_ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--refs", required=True, help=f"comma-separated commits ('{WORKTREE}': "
                                                 "the work tree)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=20, help="seconds per overload phase")
    p.add_argument("--stack", default="make-up", choices=exp_f.STACKS)
    args = p.parse_args(argv)
    refs = [short(r) for r in args.refs.split(",")]
    runs = alternate(args.stack, refs, args.rounds, args.duration)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"f_ab_{args.stack}.json").write_text(json.dumps(runs, indent=1))
    for ref, rows in runs.items():
        print(f"[ab] medians of {len(rows)} on {ref}: {json.dumps(medians(numeric(rows)))}")
        print(f"[ab] spreads on {ref}: {json.dumps(spreads(numeric(rows)))}")


if __name__ == "__main__":
    main()
