"""(g) The noisy neighbour, end to end through HTTP (issue 20 item 5).

On the stack ``make up`` starts (Valkey + embedded PostgreSQL) and on the RabbitMQ one
(RabbitMQ + PostgreSQL + Redis results/meter), each started twice by
``python -m config.up`` (bench/experiments/exp_f.py's ``Stack``): once with
``FAIR_ADMISSION=true`` and once with ``FAIR_ADMISSION=false`` (first come, first
served; the same code). Every post's author has ``--followers`` followers (400: one
fan-out chunk), which fixes the worker's cost per job; its drain rate alone is measured
first (exp_f's calibration: the queue filled with the worker stopped, then drained).

1. **Shares.** One tenant offers 10x the drain in a closed loop that ignores
   Retry-After (a 503 is followed at once by the next attempt, paced to 10x);
   three polite tenants offer 0.1x each (Poisson arrivals) and obey Retry-After
   (at most 4 attempts). Reported: the polite posts accepted at the first try, the
   p99 wait (submitted -> started, from GET /jobs) of their accepted jobs against
   1.1 x limit / drain, the worker's busy fraction (the union of every job's
   started..finished, over the phase after its first 3 s), and the queue's depth
   (sampled at 10 Hz from the broker) against the limit.
2. **Criticality.** One tenant floods ``sheddable`` posts at 10x; a user in
   ``CRITICAL_USERS`` posts ``critical`` at 0.2x (as the polite ones do).
3. **Self-throttling** (fair admission only). Two clients, each the library's
   ``post_with_backoff`` (bench/harness/throttle_load.py) posting 5x the drain, with
   the per-destination throttle (default) and with ``throttle=None``, alternated: the
   API process's CPU (/proc/<pid>/stat) per offered post, and the 503s that reached
   the API (every answer the clients received, counted by an httpx hook).

Each configuration runs ``--reps`` times; medians are reported. Loopback only;
RabbitMQ vhost ``floodgate_bench_g``, PostgreSQL database ``floodgate_bench_g`` and
Redis db 5 (no test or other bench uses it; it must be empty when the run starts) are
this run's, created and dropped.

    python -m bench.experiments.exp_g                      # both stacks, ~20 min
    python -m bench.experiments.exp_g --stack make-up --reps 1 --quick
    python -m bench.run_all --only g
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import time

from bench.experiments import exp_f
from bench.harness import api_server, g_report
from bench.harness.env import OUT, ROOT
from bench.harness.http_load import bearer, fetch_many, get, post
from bench.harness.procs import cpu_s
from bench.harness.stats import merged, percentile, rnd

PY = exp_f.PY
STACKS = ("make-up", "prod")
MODES = ("fair", "first_come")
VHOST, DB, REDIS_URL = "floodgate_bench_g", "floodgate_bench_g", "redis://127.0.0.1:6379/5"
POLITE = 3
THROTTLE_CLIENTS = 2
#: Each client's threads: enough for 5x the drain of posts that each may wait out a
#: Retry-After (at most MAX_TOTAL_S), so posts start on time (``start_lag_p99_s``).
THREADS, MAX_TOTAL_S = 800, 2.0
TARGETS = {"polite_first_try": 0.99, "wait_factor": 1.1, "busy": 0.9, "critical": 0.99}
#: The phase's first seconds, while the queue fills, are left out of the busy fraction.
WARM_S = 3.0
RERUN = "python -m bench.experiments.exp_g --stack {stack}"
section = g_report.section


def log(msg: str) -> None:
    print(f"[g] {time.strftime('%H:%M:%S')} {msg}", flush=True)


# --------------------------------------------------------------------------- the stack

@contextlib.contextmanager
def started(kind: str, limit: int, fair: bool, critical_user: str):
    """exp_f's Stack with this mode's settings; on RabbitMQ, this run's own vhost,
    database and Redis db (exp_f's module names are swapped for ours while it runs)."""
    names = ("PROD_VHOST", "PROD_DB", "PROD_REDIS")
    saved_names = {n: getattr(exp_f, n) for n in names}
    saved_env = {k: os.environ.get(k) for k in ("FAIR_ADMISSION", "CRITICAL_USERS")}
    if kind == "prod":
        _check_redis_empty()
    for n, value in zip(names, (VHOST, DB, REDIS_URL)):
        setattr(exp_f, n, value)
    os.environ.update(FAIR_ADMISSION=str(fair).lower(), CRITICAL_USERS=critical_user)
    stack = None
    try:
        stack = exp_f.Stack(kind, limit)
        stack.wait_healthy()
        yield stack
    finally:
        if stack is not None:
            stack.stop()
        for n, value in saved_names.items():
            setattr(exp_f, n, value)
        for k, v in saved_env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _check_redis_empty() -> None:
    import redis

    n = redis.Redis.from_url(REDIS_URL).dbsize()
    if n:
        raise RuntimeError(f"{REDIS_URL} holds {n} keys this run did not make; bench (g) "
                           "empties its Redis db when done, so it needs an empty one: "
                           "change exp_g.REDIS_URL")


def setup_users(port: int, tag: str, followers: int) -> dict[str, str]:
    """The tenants (authors) and their followers; tenant role -> (name, key)."""
    roles = ["noisy", *(f"polite{i}" for i in range(POLITE)), "critical",
             *(f"client{i}" for i in range(THROTTLE_CLIENTS))]
    names = {role: f"{tag}_{role}" for role in roles}
    fans = [f"{tag}_fan{i}" for i in range(followers)]
    keys = api_server.sign_up(port, list(names.values()) + fans)
    api_server.follow_all(port, {f: keys[f] for f in fans}, list(names.values()))
    return {role: {"name": name, "key": keys[name]} for role, name in names.items()}


def post_as(user: dict, criticality: str | None = None) -> str:
    body = {"text": f"bench g from {user['name']}"}
    if criticality:
        body["criticality"] = criticality
    return post("/posts", body, headers=bearer(user["key"]))


# --------------------------------------------------------------------------- load

def run_module(module: str, spec: dict, timeout_s: float) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    spec_path, out_path = OUT / f"g-spec-{stamp}.json", OUT / f"g-out-{stamp}.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.Popen([PY, "-m", module, str(spec_path), str(out_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return {"proc": proc, "spec": spec_path, "out": out_path, "timeout_s": timeout_s}


def collect(job: dict) -> dict:
    try:
        _, err = job["proc"].communicate(timeout=job["timeout_s"])
    except subprocess.TimeoutExpired:
        job["proc"].kill()
        raise
    job["spec"].unlink(missing_ok=True)
    if job["proc"].returncode != 0:
        raise RuntimeError(f"load generator failed: {err[-2000:]}")
    out = json.loads(job["out"].read_text())
    job["out"].unlink()
    return out


def poll_jobs(port: int, owner: dict[str, str], timeout_s: float) -> dict[str, dict]:
    """GET /jobs/{id} for every accepted job, with its owner's key, until all are final."""
    out: dict[str, dict] = {}
    pending, deadline = list(owner), time.time() + timeout_s
    while pending:
        answers = fetch_many("127.0.0.1", port,
                             [get(f"/jobs/{j}", headers=bearer(owner[j])) for j in pending], 8)
        still = []
        for jid, (status, body) in zip(pending, answers):
            out[jid] = json.loads(body) if status == 200 else {"state": f"http {status}"}
            if out[jid].get("state") not in ("succeeded", "failed"):
                still.append(jid)
        pending = still
        if not pending or time.time() > deadline:
            break
        time.sleep(1.0)
    return out


def phase(stack, users: dict, drain: float, tenants: list[dict], duration_s: float) -> dict:
    """Run these tenants together; the depth sampled, every accepted job's times read."""
    exp_f.settle(stack.banner["broker"], 60)
    sampler = exp_f.DepthSampler(stack.banner["broker"])
    api = stack.api_pid()
    cpu0 = cpu_s(api)
    sampler.start()
    load = collect(run_module("bench.harness.tenant_load", {
        "host": "127.0.0.1", "port": stack.port, "duration_s": duration_s,
        "timeout_s": 10, "tenants": tenants}, duration_s + 90))
    api_cpu = cpu_s(api) - cpu0
    time.sleep(stack.limit / drain + 2)
    samples = sampler.stop()
    keys = {t["name"]: t["key"] for t in tenants}
    owner = {p["job"]: keys[t["name"]] for t in load["tenants"] for p in t["posts"] if p["job"]}
    times = poll_jobs(stack.port, owner, max(30.0, 3 * stack.limit / drain))
    return summarise(load, samples, times, drain, stack.limit, api_cpu)


def summarise(load: dict, samples: list, times: dict, drain: float, limit: int,
              api_cpu: float) -> dict:
    t0, t_end = load["t0"], load["t_end"]
    out = {"tenants": {}}
    for t in load["tenants"]:
        posts = t["posts"]
        waits = [times[p["job"]]["started_at"] - times[p["job"]]["submitted_at"]
                 for p in posts if p["job"] and times.get(p["job"], {}).get("started_at")]
        n = len(posts)
        out["tenants"][t["name"]] = {
            "kind": t["kind"], "offered_posts": n, "attempts": sum(p["attempts"] for p in posts),
            "first_try_accepted": rnd(sum(p["first"] == 202 for p in posts) / n, 4) if n else None,
            "accepted": rnd(sum(p["final"] == 202 for p in posts) / n, 4) if n else None,
            "answers": t["counts"], "reasons_503": t["reasons_503"],
            "wait_p50_s": rnd(percentile(waits, 50)), "wait_p99_s": rnd(percentile(waits, 99)),
            "waits_measured": len(waits)}
    window = (t0 + WARM_S, t_end)
    spans = [(max(window[0], d["started_at"]), min(window[1], d["finished_at"]))
             for d in times.values() if d.get("started_at") and d.get("finished_at")]
    busy = sum(b - a for a, b in merged([s for s in spans if s[1] > s[0]]))
    done = sum(1 for d in times.values() if d.get("finished_at")
               and window[0] <= d["finished_at"] < window[1])
    depths = [d for _, d in samples if d is not None]
    in_window = [d for t, d in samples if d is not None and window[0] <= t < window[1]]
    states: dict[str, int] = {}
    for d in times.values():
        states[d.get("state")] = states.get(d.get("state"), 0) + 1
    attempts = sum(v["attempts"] for v in out["tenants"].values())
    out.update(
        duration_s=rnd(t_end - t0, 1), worker_busy=rnd(busy / (window[1] - window[0])),
        queue_nonempty=rnd(sum(d > 0 for d in in_window) / len(in_window)) if in_window else None,
        completion_vs_drain=rnd(done / (window[1] - window[0]) / drain),
        depth_max=max(depths, default=None), depth_p50=percentile(depths, 50),
        limit=limit, wait_bound_s=rnd(TARGETS["wait_factor"] * limit / drain),
        job_states=states, api_cpu_s=rnd(api_cpu, 2),
        api_cpu_us_per_attempt=rnd(api_cpu / max(1, attempts) * 1e6, 1),
        loadgen_cpu_share=load["loadgen_cpu_share"],
        series={"depth": [(rnd(t - t0, 2), d) for t, d in samples]})
    return out


def shares(stack, users: dict, drain: float, duration_s: float) -> dict:
    tenants = [{"name": users["noisy"]["name"], "key": users["noisy"]["key"], "kind": "greedy",
                "rate": 10 * drain, "conns": 32, "request": post_as(users["noisy"])}]
    for i in range(POLITE):
        u = users[f"polite{i}"]
        tenants.append({"name": u["name"], "key": u["key"], "kind": "polite", "seed": i + 1,
                        "rate": 0.1 * drain, "request": post_as(u), "max_attempts": 4,
                        "max_wait_s": 10})
    r = phase(stack, users, drain, tenants, duration_s)
    polite = [r["tenants"][users[f"polite{i}"]["name"]] for i in range(POLITE)]
    r["polite"] = _pool(polite, r["wait_bound_s"])
    r["noisy"] = r["tenants"][users["noisy"]["name"]]
    return r


def criticality(stack, users: dict, drain: float, duration_s: float) -> dict:
    noisy, crit = users["noisy"], users["critical"]
    tenants = [{"name": noisy["name"], "key": noisy["key"], "kind": "greedy", "rate": 10 * drain,
                "conns": 32, "request": post_as(noisy, "sheddable")},
               {"name": crit["name"], "key": crit["key"], "kind": "polite", "seed": 7,
                "rate": 0.2 * drain, "request": post_as(crit, "critical"), "max_attempts": 4,
                "max_wait_s": 10}]
    r = phase(stack, users, drain, tenants, duration_s)
    r["critical"] = _pool([r["tenants"][crit["name"]]], r["wait_bound_s"])
    r["sheddable"] = r["tenants"][noisy["name"]]
    return r


def _pool(rows: list[dict], bound_s: float) -> dict:
    """The polite tenants together: post-weighted acceptance, the worst p99 wait."""
    n = sum(r["offered_posts"] for r in rows)
    first = sum(r["first_try_accepted"] * r["offered_posts"] for r in rows if r["offered_posts"])
    final = sum(r["accepted"] * r["offered_posts"] for r in rows if r["offered_posts"])
    p99 = max((r["wait_p99_s"] for r in rows if r["wait_p99_s"] is not None), default=None)
    return {"posts": n, "first_try_accepted": rnd(first / n, 4) if n else None,
            "accepted": rnd(final / n, 4) if n else None, "wait_p99_s": p99,
            "wait_within_bound": None if p99 is None else p99 <= bound_s}


def self_throttling(stack, users: dict, drain: float, duration_s: float, throttle: bool) -> dict:
    exp_f.settle(stack.banner["broker"], 60)
    api = stack.api_pid()
    cpu0, w0 = cpu_s(api), time.time()
    jobs = [run_module("bench.harness.throttle_load", {
        "base_url": f"http://127.0.0.1:{stack.port}", "api_key": users[f"client{i}"]["key"],
        "rate": 5 * drain, "duration_s": duration_s, "threads": THREADS, "throttle": throttle,
        "max_attempts": 3, "max_total_s": MAX_TOTAL_S, "max_lag_s": 1.0}, duration_s + 90)
        for i in range(THROTTLE_CLIENTS)]
    try:
        outs = [collect(j) for j in jobs]
    finally:
        for j in jobs:  # ours, by PID: none outlives a failed phase
            if j["proc"].poll() is None:
                j["proc"].kill()
    api_cpu, wall = cpu_s(api) - cpu0, time.time() - w0
    posts = sum(o["posts"] for o in outs)
    dropped = sum(o.get("dropped", 0) for o in outs)
    wire: dict[str, int] = {}
    finals: dict[str, int] = {}
    for o in outs:
        for k, v in o["wire"].items():
            wire[k] = wire.get(k, 0) + v
        for k, v in o["finals"].items():
            finals[k] = finals.get(k, 0) + v
    sent = sum(wire.values())
    return {"throttle": throttle, "offered_posts": posts, "requests_to_api": sent,
            "not_offered_client_saturated": dropped,
            "refusals_to_api": wire.get("503", 0), "accepted": wire.get("202", 0),
            "wire": wire, "finals": finals,
            "api_cpu_s": rnd(api_cpu, 2), "api_cpu_share": rnd(api_cpu / wall),
            "api_cpu_us_per_offered_post": rnd(api_cpu / max(1, posts) * 1e6, 1),
            "requests_per_offered_post": rnd(sent / max(1, posts), 3),
            "client_cpu_s": rnd(sum(o["client_cpu_s"] for o in outs), 2),
            "offered_rate_per_s": rnd(sum(o["posts"] / max(1e-9, o["last_start"] - o["t0"])
                                          for o in outs), 1),
            "start_lag_p99_s": max((o["start_lag_p99_s"] or 0) for o in outs)}


# --------------------------------------------------------------------------- the run

def run_mode(kind: str, mode: str, tag: str, args) -> dict:
    fair = mode == "fair"
    critical_user = f"{tag}_critical"
    out: dict = {"mode": mode, "fair_admission": fair}
    with started(kind, args.limit, fair, critical_user) as stack:
        out["banner"] = {k: re.sub(r"//[^@/]*@", "//", v) for k, v in stack.banner.items()}
        t = time.time()
        users = setup_users(stack.port, tag, args.followers)
        log(f"{kind} {mode}: {len(users)} tenants x {args.followers} followers in "
            f"{time.time() - t:.1f} s")
        reqs = [post_as(users[r]) for r in users]
        jobs = exp_f.JobTimes(stack, [users[r]["key"] for r in users])
        out["calibration"] = exp_f.calibrate(stack, reqs, jobs, reps=args.calibration_reps)
        drain = out["drain_rate_per_s"] = out["calibration"]["drain_rate_per_s"]
        log(f"{kind} {mode}: drain alone {drain} jobs/s")
        out["shares"], out["criticality"], out["throttle_on"], out["throttle_off"] = [], [], [], []
        for rep in range(args.reps):
            r = guarded(shares, stack, users, drain, args.shares_s)
            out["shares"].append(r)
            if "error" not in r:
                log(f"  shares {rep + 1}: polite first try {r['polite']['first_try_accepted']}, "
                    f"p99 wait {r['polite']['wait_p99_s']} s (bound {r['wait_bound_s']}), busy "
                    f"{r['worker_busy']}, queue not empty {r['queue_nonempty']}, depth max "
                    f"{r['depth_max']}/{args.limit}, noisy {r['noisy']['answers']}")
            r = guarded(criticality, stack, users, drain, args.criticality_s)
            out["criticality"].append(r)
            if "error" not in r:
                log(f"  criticality {rep + 1}: critical accepted first try "
                    f"{r['critical']['first_try_accepted']}, in the end "
                    f"{r['critical']['accepted']}; depth max {r['depth_max']}")
            if fair and args.throttle_s > 0 and rep < args.throttle_reps:
                for on in ((True, False) if rep % 2 == 0 else (False, True)):
                    r = guarded(self_throttling, stack, users, drain, args.throttle_s, on)
                    out["throttle_on" if on else "throttle_off"].append(r)
                    if "error" not in r:
                        log(f"  throttle {'on' if on else 'off'} {rep + 1}: "
                            f"{r['offered_posts']} posts ({r['not_offered_client_saturated']} "
                            f"not offered), {r['requests_to_api']} reached the API "
                            f"({r['wire']}), API {r['api_cpu_us_per_offered_post']} us CPU "
                            "per offered post")
        out["log_errors"] = exp_f._log_errors(stack.log_path)
    out["medians"] = medians(out)
    return out


def guarded(phase_fn, *args) -> dict:
    """One phase; a phase that fails is recorded (``error``) and the run goes on."""
    try:
        return phase_fn(*args)
    except Exception as exc:  # noqa: BLE001 - one bad phase must not lose the others
        log(f"  {phase_fn.__name__} failed: {type(exc).__name__}: {str(exc)[:300]}")
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def medians(out: dict) -> dict:
    def med(rows: list[dict], *path) -> float | None:
        vals = []
        for row in rows:
            for p in path:
                row = row.get(p) if isinstance(row, dict) else None
            if row is not None:
                vals.append(row)
        return rnd(statistics.median(vals), 4) if vals else None

    s = [r for r in out["shares"] if "error" not in r]
    c = [r for r in out["criticality"] if "error" not in r]
    m = {"polite_first_try": med(s, "polite", "first_try_accepted"),
         "polite_accepted": med(s, "polite", "accepted"),
         "polite_wait_p99_s": med(s, "polite", "wait_p99_s"),
         "wait_bound_s": med(s, "wait_bound_s"), "worker_busy": med(s, "worker_busy"),
         "queue_nonempty": med(s, "queue_nonempty"),
         "completion_vs_drain": med(s, "completion_vs_drain"),
         "depth_max": max((r["depth_max"] or 0) for r in s) if s else None,
         "noisy_attempts": med([r["noisy"] for r in s], "attempts"),
         "noisy_accepted_share": med([r["noisy"] for r in s], "accepted"),
         "api_cpu_us_per_attempt": med(s, "api_cpu_us_per_attempt"),
         "critical_first_try": med(c, "critical", "first_try_accepted"),
         "critical_accepted": med(c, "critical", "accepted"),
         "critical_wait_p99_s": med(c, "critical", "wait_p99_s"),
         "criticality_depth_max": max((r["depth_max"] or 0) for r in c) if c else None,
         "criticality_busy": med(c, "worker_busy")}
    for key in ("throttle_on", "throttle_off"):
        rows = [r for r in out.get(key) or [] if "error" not in r]
        if rows:
            m[key] = {f: med(rows, f) for f in (
                "offered_posts", "requests_to_api", "refusals_to_api", "accepted",
                "api_cpu_us_per_offered_post", "requests_per_offered_post", "api_cpu_share",
                "client_cpu_s", "start_lag_p99_s", "offered_rate_per_s",
                "not_offered_client_saturated")}
    return m


def run(kind: str, args) -> dict:
    t = time.time()
    tag = f"g{os.getpid() % 10000}"
    out = {"stack": kind, "limit": args.limit, "followers": args.followers, "reps": args.reps,
           "phase_s": {"shares": args.shares_s, "criticality": args.criticality_s,
                       "throttle": args.throttle_s},
           "commit": exp_f.git_commit(), "cores": os.cpu_count(), "targets": TARGETS,
           "quick": args.quick}
    for mode in MODES:
        out[mode] = run_mode(kind, mode, tag, args)
    out["wall_s"] = rnd(time.time() - t, 1)
    out["plot"] = g_report.plot(out)
    return out


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.experiments.exp_g", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stack", default=",".join(STACKS))
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--followers", type=int, default=400)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--shares-s", type=float, default=30)
    p.add_argument("--criticality-s", type=float, default=20)
    p.add_argument("--throttle-s", type=float, default=20)
    p.add_argument("--throttle-reps", type=int, default=2,
                   help="runs of the self-throttling pair (on, off), in the first reps")
    p.add_argument("--calibration-reps", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="short phases, one rep: a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.shares_s, args.criticality_s, args.throttle_s = 1, 12, 10, 10
        args.throttle_reps = 1
        args.calibration_reps = 1
    return args


def main(argv=None) -> None:
    from bench import run_all

    args = parse(argv)
    for kind in args.stack.split(","):
        result = run(kind, args)
        run_all.save_item("g", kind, result)
        log(f"wrote bench/results/items/g_{kind}.json ({result['wall_s']} s)")
    run_all.append_items()
    log("wrote the (g) sections of bench/RESULTS.md")


if __name__ == "__main__":
    main()
