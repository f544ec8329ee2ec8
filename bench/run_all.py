"""Run the benchmarks and write bench/RESULTS.md.

    python -m bench.run_all [--only b] [--broker redis] [--quick] [--report-only]
    python -m bench.run_all --only f [--stack make-up,make-up-sqlite,prod] [--f-limit 60]
    python -m bench.run_all --only batch,fanout,growth [--quick]
    python -m bench.run_all --only peers [--broker redis] [--peers-n 20000] [--peers-rounds 3]
    python -m bench.run_all --only auth [--auth-parts micro,app,e2e,expiry,f_ab,f_full] [--quick]
    python -m bench.run_all --only g [--stack make-up,prod] [--quick]
    python -m bench.run_all --only submit [--broker redis|amqp] [--quick]

Defaults: experiments a, b, e on both brokers; c and d on Redis (d needs Redis).
(f), the overload experiment through HTTP on whole stacks, runs only when asked
(``--only f``), on the stacks ``make up`` starts and the production-like one by default.
(batch), (fanout) and (growth) (issue 10 items 3-5), and (auth) (issue 19: the cost of
authentication per request, and (f) beside the code before it) also run only when asked; their
summaries go to bench/results/items/ and their sections are appended to RESULTS.md
after the generated report (bench/experiments/exp_<name>.py writes each).
Each experiment's summary goes to bench/results/<exp>_<broker>.json and its plot
to bench/plots/; the report is rebuilt from every summary present, so running
one experiment refreshes only its own section.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import importlib

from bench.experiments import exp_f
from bench.reporting import figures, report
from bench.harness import lock
from bench.harness.env import OUT, RESULTS, ensure_vhost
from bench.harness.machine import machine_meta
from bench.reporting.notes import NOTES

META = RESULTS / "meta.json"
DEFAULT_BROKERS = {"a": ("redis", "amqp"), "b": ("redis", "amqp"), "c": ("redis",),
                   "d": ("redis",), "e": ("redis", "amqp"), "f": exp_f.DEFAULT_STACKS,
                   "batch": ("redis", "amqp"), "fanout": ("redis",), "growth": ("redis", "amqp"),
                   "peers": ("redis", "amqp"), "auth": ("redis",), "g": ("make-up", "prod"),
                   # (submit), issue 21: throughput of 64 submitters on each broker, then
                   # (f) on each stack with API_SUBMIT_PATH=async beside threads
                   "submit": ("redis", "amqp", "make-up", "prod")}
#: Experiments whose summaries live in bench/results/items/ and whose sections the
#: experiment module writes (``section(result)``), appended after the generated report.
ITEMS = ("batch", "fanout", "growth", "peers", "auth", "g")
#: Experiments whose summaries also go to bench/results/items/ but whose RESULTS.md section
#: is written once by hand from them (``python -m bench.experiments.exp_<name> --section``
#: prints it), so a rerun leaves the section as it was written.
SELF_REPORTED = ("submit",)
ITEM_RESULTS = RESULTS / "items"


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    p.add_argument("--only", default="a,b,c,d,e", help="comma-separated experiments (a-f)")
    p.add_argument("--broker", choices=("redis", "amqp", "both"), default=None,
                   help="run on this broker only (default: each experiment's defaults)")
    p.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    p.add_argument("--stack", default=",".join(exp_f.DEFAULT_STACKS),
                   help="(f) only: comma-separated stacks among " + ", ".join(exp_f.STACKS))
    p.add_argument("--f-limit", type=int, default=60, help="(f) only: QUEUE_LIMITS=fanout=N")
    p.add_argument("--f-duration", type=float, default=None,
                   help="(f) only: seconds per overload phase (default 60, 10 with --quick)")
    p.add_argument("--f-before", default=None, metavar="COMMIT",
                   help="(f) only: also run each stack on this earlier commit's code (git "
                        "archive into a temp dir) and keep it as before_run in the result")
    p.add_argument("--f-code", default=None, metavar="COMMIT",
                   help="(f) only: measure this commit's code (git archive into a temp dir) "
                        "instead of the work tree")
    p.add_argument("--f-pin-loadgen", type=int, default=None,
                   help="(f) only: pin the load generator to this CPU (sched_setaffinity)")
    p.add_argument("--fanout-sizes", default=None,
                   help="(fanout) only: follower counts (default 1000,10000,100000; "
                        "--quick: 1000,10000)")
    p.add_argument("--fanout-per-follower", default=None,
                   help="(fanout) only: sizes at which one task per follower is timed too "
                        "(default 1000,10000; --quick: 1000; '' for none)")
    p.add_argument("--fanout-chunk", type=int, default=None,
                   help="(fanout) only: FANOUT_CHUNK_SIZE for the chunked path "
                        "(default: the settings' default)")
    p.add_argument("--fanout-workers", type=int, default=2, help="(fanout) only: worker processes")
    p.add_argument("--peers-n", type=int, default=20000, help="(peers) only: tasks per measure")
    p.add_argument("--peers-rounds", type=int, default=3, help="(peers) only: alternating rounds")
    p.add_argument("--peers-systems", default="",
                   help="(peers) only: comma-separated systems (default: all)")
    p.add_argument("--auth-before", default="63dd694", metavar="COMMIT",
                   help="(auth) only: the code before API keys, measured beside the work tree "
                        "('' for none)")
    p.add_argument("--auth-f-ab-rounds", type=int, default=3,
                   help="(auth) only: rounds of (f) alternating the work tree and --auth-before "
                        "(0: none)")
    p.add_argument("--auth-f-ab-duration", type=float, default=20,
                   help="(auth) only: seconds per overload phase in those rounds")
    p.add_argument("--auth-parts", default="micro,app,e2e,expiry,f_ab,f_full",
                   help="(auth) only: comma-separated parts to run")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild RESULTS.md (and plots, from bench/out/) without running anything")
    return p.parse_args(argv)


def brokers_for(exp: str, choice: str | None, stacks: str | None = None) -> tuple[str, ...]:
    if exp == "g":  # (g) runs on exp_f's stacks: make up's, and the RabbitMQ one ("prod")
        by_broker = {"redis": ("make-up",), "amqp": ("prod",), "both": ("make-up", "prod")}
        chosen = tuple(s.strip() for s in (stacks or "").split(",")
                       if s.strip() in DEFAULT_BROKERS["g"])
        return by_broker[choice] if choice else chosen or DEFAULT_BROKERS["g"]
    if exp == "submit" and choice is None:  # --stack picks (f)'s stacks, as for (f)
        chosen = tuple(s.strip() for s in (stacks or "").split(",") if s.strip() in
                       DEFAULT_BROKERS["submit"])
        return ("redis", "amqp", *chosen)
    if exp == "f":
        chosen = tuple(s.strip() for s in (stacks or "").split(",") if s.strip())
        bad = [s for s in chosen if s not in exp_f.STACKS]
        if bad:
            raise SystemExit(f"unknown stack(s) {bad}; choose among {exp_f.STACKS}")
        return chosen or DEFAULT_BROKERS["f"]
    if choice is None:
        return DEFAULT_BROKERS[exp]
    wanted = ("redis", "amqp") if choice == "both" else (choice,)
    return tuple(b for b in wanted if not (exp in ("d", "fanout") and b == "amqp"))


def _exp(name: str):
    """Experiments a-e load the task modules; import them only when they run, so (f),
    which drives whole stacks over HTTP, and --report-only need none of them."""
    return importlib.import_module(f"bench.experiments.exp_{name}")


def run_a(broker, quick, capacity):
    return _exp("a").run(broker, **({"n": 500, "reps": 3, "refusals": 50} if quick else {}))


def run_b(broker, quick, capacity):
    r = _exp("b").run(broker, **({"duration_s": 15} if quick else {}))
    capacity[broker] = r["capacity_per_s"]
    return r


def run_c(broker, quick, capacity):
    """Meter warm (an overload under way) is the result; a run after light traffic beside it."""
    t = time.time()
    trickle = _exp("c").run(broker, capacity=capacity.get(broker), prelude="trickle",
                        duration_s=15 if quick else 30)
    capacity.setdefault(broker, trickle["capacity_per_s"])
    save("c", f"{broker}_trickle", {**trickle, "quick": quick,
                                    "wall_s": round(time.time() - t, 1)})
    return _exp("c").run(broker, capacity=capacity[broker], **({"duration_s": 20} if quick else {}))


def run_d(broker, quick, capacity):
    r = _exp("d").run(broker, capacity=capacity.get(broker), **({"duration_s": 24} if quick else {}))
    capacity.setdefault(broker, r["capacity_one_worker_per_s"])
    return r


def run_e(broker, quick, capacity):
    return _exp("e").run(broker, **({"n": 2000, "reps": 1, "n_diagnostic": 1000} if quick else {}))


def run_f(stack, quick, capacity, args=None):
    duration = args.f_duration if args and args.f_duration else (10 if quick else 60)
    kw = dict(limit=args.f_limit if args else 60, duration_s=duration,
              pin_cpu=args.f_pin_loadgen if args else None)
    before = None
    if args and args.f_before:
        full = exp_f.run(stack, code_ref=args.f_before, **kw)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"f_{stack}_before.full.json").write_text(json.dumps(full))
        before = strip(full)
    result = exp_f.run(stack, code_ref=args.f_code if args else None, **kw)
    if before:
        result["before_run"] = before
    return result


def run_batch(broker, quick, capacity, args=None):
    return _exp("batch").run(broker, **({"n": 1000, "reps": 3} if quick else {}))


def run_fanout(broker, quick, capacity, args=None):
    given = lambda name: getattr(args, name, None) if args else None  # noqa: E731
    sizes = [int(x) for x in (given("fanout_sizes") or
                              ("1000,10000" if quick else "1000,10000,100000")).split(",")]
    per = given("fanout_per_follower")
    per = [int(x) for x in (per if per is not None else
                            ("1000" if quick else "1000,10000")).split(",") if x]
    return _exp("fanout").run(broker, sizes=sizes, per_follower_sizes=per,
                              chunk_size=given("fanout_chunk"),
                              workers=given("fanout_workers") or 2,
                              raw_reps=1 if quick else 3)


def run_growth(broker, quick, capacity, args=None):
    return _exp("growth").run(broker, quick=quick)


def run_peers(broker, quick, capacity, args=None):
    n = args.peers_n if args else 20000
    rounds = args.peers_rounds if args else 3
    systems = [s.strip() for s in (args.peers_systems if args else "").split(",") if s.strip()]
    if quick:
        n, rounds = min(n, 1000), 1
    return _exp("peers").run(broker, n=n, rounds=rounds, systems=systems or None,
                             api_posts=200 if quick else 2000)


def run_auth(broker, quick, capacity, args=None):
    given = lambda name, default: getattr(args, name, default) if args else default
    return _exp("auth").run(broker, quick=quick, before=given("auth_before", "63dd694") or None,
                            f_ab_rounds=given("auth_f_ab_rounds", 3),
                            f_ab_duration=given("auth_f_ab_duration", 20),
                            parts=_exp("auth").parse_parts(
                                given("auth_parts", "micro,app,e2e,expiry,f_ab,f_full")))


def run_g(stack, quick, capacity, args=None):
    g = _exp("g")
    return g.run(stack, g.parse(["--quick"] if quick else []))


def run_submit(target, quick, capacity, args=None):
    """A broker's submission throughput (redis, amqp), or a stack's (f) by submit path."""
    return _exp("submit").run(target, quick=quick)


RUNNERS = {"a": run_a, "b": run_b, "c": run_c, "d": run_d, "e": run_e, "f": run_f,
           "batch": run_batch, "fanout": run_fanout, "growth": run_growth,
           "peers": run_peers, "auth": run_auth, "g": run_g, "submit": run_submit}


def save(exp: str, broker: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{exp}_{broker}.full.json").write_text(json.dumps(result))
    (RESULTS / f"{exp}_{broker}.json").write_text(json.dumps(strip(result), indent=1))
    figures.draw(f"{exp}_{broker}", result)


def save_item(exp: str, broker: str, result: dict) -> None:
    ITEM_RESULTS.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{exp}_{broker}.full.json").write_text(json.dumps(result))
    (ITEM_RESULTS / f"{exp}_{broker}.json").write_text(json.dumps(strip(result), indent=1))


ITEMS_BEGIN, ITEMS_END = "<!-- items: begin -->", "<!-- items: end -->"


def append_items() -> None:
    """Put the (batch), (fanout) and (growth) sections, from their summaries, at the end of
    RESULTS.md, between markers (replaced on each run; the generated report is untouched)."""
    parts = []
    for exp in ITEMS:
        paths = ITEM_RESULTS.glob(f"{exp}_*.json")
        for path in sorted(paths, key=lambda p: (not p.stem.split("_", 1)[1].startswith("redis"),
                                                 p.stem)):
            r = json.loads(path.read_text())
            parts.append(_exp(exp).section(r) + f"\n\n_Wall time {r.get('wall_s', '?')} s._\n")
    if not parts:
        return
    results_md = RESULTS.parent / "RESULTS.md"
    text = results_md.read_text() if results_md.exists() else ""
    if ITEMS_BEGIN in text and ITEMS_END in text:
        text = text[:text.index(ITEMS_BEGIN)].rstrip() + text[text.index(ITEMS_END) + len(ITEMS_END):]
    block = "\n\n".join(parts)
    results_md.write_text(f"{text.rstrip()}\n\n{ITEMS_BEGIN}\n\n{block}\n\n{ITEMS_END}\n")


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
        append_items()
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
        for broker in brokers_for(exp, args.broker, args.stack):
            lock.refresh(me)
            t = time.time()
            print(f"[bench] ({exp}) on {broker} ...", flush=True)
            if exp == "f" or exp in ITEMS or exp in SELF_REPORTED:
                result = RUNNERS[exp](broker, args.quick, capacity, args)
            else:
                result = RUNNERS[exp](broker, args.quick, capacity)
            result.update(wall_s=round(time.time() - t, 1), quick=args.quick)
            if exp in ITEMS or exp in SELF_REPORTED:
                save_item(exp, broker, result)
            else:
                save(exp, broker, result)
            print(f"[bench] ({exp}) on {broker} done in {result['wall_s']} s", flush=True)
    if all(e.strip() in ITEMS + SELF_REPORTED for e in args.only.split(",") if e.strip()):
        append_items()  # item runs leave the generated report and its meta as they are
        print("[bench] wrote the item sections of bench/RESULTS.md", flush=True)
        for exp in SELF_REPORTED:
            if exp in args.only:
                print(f"[bench] ({exp}): its section is printed by python -m "
                      f"bench.experiments.exp_{exp} --section", flush=True)
        return
    meta.update(machine_meta(end=True), wall_min=round((time.time() - start) / 60, 1),
                command="python -m bench.run_all " + " ".join(argv or sys.argv[1:]))
    META.write_text(json.dumps(meta, indent=1))
    report.write(meta, NOTES)
    append_items()
    print(f"[bench] wrote bench/RESULTS.md in {meta['wall_min']} min", flush=True)


if __name__ == "__main__":
    main()
