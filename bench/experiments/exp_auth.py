"""(auth) What authentication costs per request (issue 19), measured on the real path.

* **In process** (bench/harness/auth_micro.py, in a fresh interpreter on a PostgreSQL
  database of its own): ``auth.user_key(request)``, the one dependency a route takes
  (``KeyBearer``: the Authorization header, the key's cached entry, the HMAC of its id
  only when it is not cached, the hash compare), on a fresh Starlette request, for: a
  key checked in the last AUTH_CACHE_S (cached), a made-up key (refused by its
  HMAC-signed id), no credential, and a key not in the cache (one indexed query in a
  thread; the cache is emptied before each call). Beside them, the same loop building
  the request and awaiting nothing (the baseline, subtracted in the "net" column); and
  the dependency wired into a FastAPI route, beside the same route without it. Cases
  interleaved, rotated every repetition; the median of the repetitions' means.
* **The whole app in process** (bench/harness/app_refusal.py): an ASGI call of the real
  ``api.main.app`` refusing a post, this code and the code before keys alternated.
* **End to end**: the API process (``python -m api.serve`` where the code has it, else
  uvicorn) on the Redis broker (db 10), and the same API of the code before API keys
  (``--before``) beside it on the same database and queue. Every round a fanout worker drains
  the queue (so the drain rate is measured, and refusals are answered in process as in
  bench (f)), is stopped (SIGSTOP), and the queue is filled again; then each case, in
  turn (rotated every round): 1 connection back to back (latency),
  then 16 (throughput, and the API process's CPU per answer): a refused post with a
  valid key (503), the same refusal by the code before keys (no key; the author in the
  body), a post without a key (401), a post with a made-up key (401), GET /healthz
  (public, cached; the floor). Medians over rounds, ratios per round then their median.
* **Key ageing** (``expiry``): refusals offered open loop at bench (f)'s 10x rate from 8
  keys, to an API with AUTH_CACHE_S as configured (a key in use is read again in the
  background every AUTH_CACHE_S / 2) and to one with a long AUTH_CACHE_S, alternated.
* **(f) side by side** (``--f-ab-rounds``): bench (f) on the work tree and on the code
  before keys, alternated (bench/experiments/exp_f_ab.py); and one full-length (f) on
  the work tree (``--f-full``), set beside the run recorded before this issue.

    python -m bench.run_all --only auth                # all of it, about 20 minutes
    python -m bench.experiments.exp_auth --quick --parts micro,e2e,expiry     # 2 minutes

Isolation: the database ``floodgate_bench_auth_<pid>`` on
127.0.0.1:5432, created and dropped; Redis db 10 (emptied but for the bench lock, as
every bench run does); loopback only.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.experiments import exp_f
from bench.harness import api_server, pg
from bench.harness.api_server import ApiProcess
from bench.harness.auth_micro import APP_STATUS, NET_OF
from bench.harness.env import OUT, RESULTS, ROOT, phase_env
from bench.harness.http_load import bearer, fetch_many, get, post
from bench.harness.stats import percentile, rnd
from bench.reporting import auth_section

DB = f"floodgate_bench_auth_{os.getpid()}"
#: Long enough for the worker to drain over two meter flushes, so the drain rate is
#: measured and the API answers refusals in process, as under a real overload.
FILL_LIMIT = 300
BEFORE = "63dd694"  # the last commit before issue 19: no API keys
E2E_CASES = ("refused_key", "refused_key_uvicorn", "refused_before", "no_key", "forged_key",
             "healthz")
E2E_EXPECT = {"refused_key": "503", "refused_key_uvicorn": "503", "refused_before": "503",
              "no_key": "401", "forged_key": "401", "healthz": "200"}
RERUN = "python -m bench.run_all --only auth"
#: AUTH_CACHE_S as configured, and long enough that no key expires during an offer.
EXPIRY_CACHE_S = (10.0, 300.0)
EXPIRY_RATE = 1000.0  # posts/s: bench (f)'s 10x offer on this machine


def log(msg: str) -> None:
    print(f"[auth] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def api_env(db_url: str) -> dict[str, str]:
    """What this run's API processes and children get: Redis db 10, the fanout limit,
    fresh secrets, and the run's own database."""
    return {**api_server.api_env(phase_env("redis", f"fanout={FILL_LIMIT}")),
            "DATABASE_URL": db_url}


class Rig:
    """Redis db 10 emptied, a fanout worker stopped (SIGSTOP) until
    :func:`drain_then_refill` lets it run, and the API processes started through
    :meth:`api`; all stopped, and Redis emptied again, when the ``with`` block ends."""

    def __init__(self, db_url: str, worker_name: str) -> None:
        self.env = api_env(db_url)
        self.worker_name = worker_name
        self.worker = None
        self.apis: list[ApiProcess] = []

    def __enter__(self) -> "Rig":
        from bench.harness.broker import reset
        from bench.harness.procs import Worker

        reset("redis")
        try:
            self.worker = Worker(self.env, self.worker_name, "fanout")
            self.worker.signal(signal.SIGSTOP)
        except BaseException:
            self.__exit__()
            raise
        return self

    def api(self, name: str, code: Path = ROOT, plain: bool = False,
            **env: str) -> ApiProcess:
        self.apis.append(ApiProcess(name, {**self.env, **env}, code, plain))
        return self.apis[-1]

    def __exit__(self, *exc) -> None:
        from bench.harness.broker import reset

        for api in self.apis:
            api.stop()
        if self.worker is not None:
            self.worker.signal(signal.SIGCONT)
            self.worker.stop()
        reset("redis")


def child_json(argv: list[str], out: Path, cwd: Path, env: dict, what: str) -> dict:
    """Run ``argv + [out]`` in a fresh interpreter; the JSON it wrote to ``out``."""
    proc = subprocess.run([*argv, str(out)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(out.read_text())
    out.unlink()
    return result


# --------------------------------------------------------------------------- in process

def micro(db_url: str, reps: int, n_fast: int, n_miss: int) -> dict:
    """The in-process measure, in a fresh interpreter with this run's settings."""
    env = api_env(db_url)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"auth-micro-{os.getpid()}.json"
    load0 = load()
    raw = child_json([api_server.PY, "-m", "bench.harness.auth_micro",
                      json.dumps([reps, n_fast, n_miss])], path, ROOT, env, "in-process measure")
    statuses = raw.pop("statuses")
    wrong = {c: st for c, st in statuses.items() if st != APP_STATUS[c]}
    if wrong:
        raise RuntimeError(f"in-process measure: FastAPI cases answered {wrong}, expected "
                           f"{APP_STATUS}: their figures would time another path")
    meds = {case: statistics.median(values) for case, values in raw.items()}
    cases = {}
    for case, values in raw.items():
        ref = NET_OF[case]
        cases[case] = {"median_us": rnd(meds[case], 2), "min_us": rnd(min(values), 2),
                       "max_us": rnd(max(values), 2), "net_of": ref,
                       "net_us": rnd(meds[case] - meds[ref], 2) if ref else None,
                       "status": statuses.get(case)}
    return {"reps": reps, "calls_per_rep": n_fast, "calls_per_rep_miss": n_miss,
            "calls_per_rep_app": n_fast // 4, "cases": cases, "load_before": load0,
            "load_after": load(), "database": "PostgreSQL 127.0.0.1:5432 (a database of its own)"}


# --------------------------------------------------------------------------- whole app

def whole_app(db_url: str, before: str | None, rounds: int, n: int) -> dict:
    """The real app's refusal in process, this code and the code before keys alternated
    (a fresh interpreter per run); medians over runs of each run's median."""
    env = api_env(db_url)
    tmp = Path(tempfile.mkdtemp(prefix="floodgate_auth_app_"))
    codes = {"now": ROOT}
    if before:
        codes["before"] = api_server.export(before, tmp / "before")
    runs: dict[str, list[dict]] = {c: [] for c in codes}
    try:
        for i in range(rounds):
            for name in (list(codes) if i % 2 == 0 else list(codes)[::-1]):
                path = tmp / f"{name}-{i}.json"
                prof = OUT / f"auth-profile-{name}.txt" if i == 0 else None
                # A script by path: its imports come from that code alone, not the work tree.
                runs[name].append(child_json(
                    [api_server.PY, str(ROOT / "bench" / "harness" / "app_refusal.py"),
                     json.dumps([5, n, str(prof) if prof else None])], path, codes[name],
                    {**env, "PYTHONPATH": str(codes[name])}, f"whole-app measure ({name})"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out: dict = {"rounds": rounds, "calls": n, "before": before,
                 "profiles": {c: str(OUT / f"auth-profile-{c}.txt") for c in codes}}
    for name, rows in runs.items():
        for case in rows[0]:
            if case == "statuses":
                continue
            values = [statistics.median(r[case]) for r in rows]
            out[f"{name} {case}"] = {"median_us": rnd(statistics.median(values), 1),
                                     "min_us": rnd(min(values), 1), "max_us": rnd(max(values), 1),
                                     "status": rows[0]["statuses"].get(case)}
    return out


# --------------------------------------------------------------------------- end to end

def phase(api: ApiProcess, request: str, conns: int, duration_s: float) -> dict:
    """``conns`` connections send ``request`` back to back for ``duration_s``."""
    fetch_many("127.0.0.1", api.port, [request] * 20, 2)  # warm: connection, caches, memo
    c0 = api.cpu_s()
    out = exp_f.run_loadgen({"mode": "closed", "requests": [request], "conns": conns,
                       "duration_s": duration_s}, api.port, duration_s + 60)
    cpu = api.cpu_s() - c0
    wall = out["t_end"] - out["t0"]
    answers = sum(out["counts"].values())
    lat = [x for xs in out["latency"].values() for x in xs]
    return {"counts": out["counts"], "per_s": rnd(answers / wall, 1),
            "p50_ms": rnd(percentile(lat, 50) * 1000, 3),
            "p99_ms": rnd(percentile(lat, 99) * 1000, 3),
            "api_cpu_us_per_answer": rnd(cpu / answers * 1e6, 1) if answers else None,
            "loadgen_cpu_share": out["loadgen_cpu_share"]}


def fill(api: ApiProcess, request: str) -> dict:
    """Posts until the queue is full (its worker stopped); the answers' counts."""
    counts: dict[str, int] = {}
    for status, _ in fetch_many("127.0.0.1", api.port, [request] * (FILL_LIMIT + 20), 4):
        counts[str(status)] = counts.get(str(status), 0) + 1
    return counts


def drain_then_refill(worker, api: ApiProcess, request: str) -> dict:
    """The worker empties the queue (the meter sees it drain), stops, and the queue is
    filled again: from here every post is refused, mostly in process."""
    from bench.harness.broker import Depth

    depth, start = Depth("redis", "fanout"), time.monotonic()
    worker.signal(signal.SIGCONT)
    try:
        while depth() > 0 and time.monotonic() - start < 60:
            time.sleep(0.1)
        time.sleep(1.2)  # the worker's last flush to the meter
    finally:
        worker.signal(signal.SIGSTOP)
        depth.close()
    return {"drain_s": rnd(time.monotonic() - start - 1.2, 2), **fill(api, request)}


def e2e(db_url: str, before: str | None, rounds: int, serial_s: float, parallel_s: float,
        conns: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="floodgate_auth_"))
    try:
        with Rig(db_url, "auth-fanout") as rig:
            apis = {"now": rig.api("auth-api-now")}
            if (ROOT / "api" / "serve.py").exists():  # api.serve's cost apart from the keys'
                apis["now_uvicorn"] = rig.api("auth-api-now-uvicorn", plain=True)
            if before:
                # The same database and queue: a post it lets through is one the worker can
                # find (the schema before keys is the first migration's; it never reads keys).
                apis["before"] = rig.api("auth-api-before",
                                         api_server.export(before, tmp / "before"))
            for api in apis.values():
                api.wait()
            requests = e2e_requests(apis)
            out = e2e_rounds(rig.worker, requests, rounds, serial_s, parallel_s, conns)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**out, "rounds": rounds, "serial_s": serial_s, "parallel_s": parallel_s,
            "conns": conns, "before": before,
            "api_command": " ".join(Path(a).name if a.startswith("/") else a
                                    for a in apis["now"].argv)}


def e2e_requests(apis: dict[str, ApiProcess]) -> dict[str, tuple[ApiProcess, str]]:
    """Each case: the API that answers it and the request it sends (one new account)."""
    name = f"e2e{os.getpid()}"
    key = api_server.sign_up(apis["now"].port, [name])[name]
    forged = f"fg_{secrets.token_hex(16)}_{secrets.token_urlsafe(32)}"
    refused = api_server.post_request(name, key, "auth e2e")
    requests = {"refused_key": (apis["now"], refused),
                "no_key": (apis["now"], post("/posts", {"text": "auth e2e"})),
                "forged_key": (apis["now"], post("/posts", {"text": "auth e2e"},
                                                 headers=bearer(forged))),
                "healthz": (apis["now"], get("/healthz"))}
    if "now_uvicorn" in apis:
        requests["refused_key_uvicorn"] = (apis["now_uvicorn"], refused)
    if "before" in apis:  # the same account, named in the body as that code wants
        requests["refused_before"] = (apis["before"],
                                      api_server.post_request(name, None, "auth e2e"))
    return {c: requests[c] for c in E2E_CASES if c in requests}


def e2e_rounds(worker, requests: dict[str, tuple[ApiProcess, str]], rounds: int,
               serial_s: float, parallel_s: float, conns: int) -> dict:
    """Per round: drain and refill the queue, then every case (rotated), serial then
    parallel."""
    now, refused = requests["refused_key"]
    filled = [fill(now, refused)]
    cases = list(requests)
    rows: dict[str, list[dict]] = {c: [] for c in cases}
    loads = [load()]
    for i in range(rounds):
        filled.append(drain_then_refill(worker, now, refused))
        log(f"round {i + 1}: drained and filled again {filled[-1]}")
        for case in cases[i % len(cases):] + cases[:i % len(cases)]:
            api, req = requests[case]
            rows[case].append({"serial": phase(api, req, 1, serial_s),
                               "parallel": phase(api, req, conns, parallel_s)})
        loads.append(load())
        log(f"round {i + 1}: " + ", ".join(
            f"{c} {rows[c][-1]['serial']['p50_ms']} ms / {rows[c][-1]['parallel']['per_s']}/s"
            f" / {rows[c][-1]['parallel']['api_cpu_us_per_answer']} µs" for c in cases))
    return {"cases": summarise_e2e(rows), "ratios": ratios(rows), "fill": filled,
            "load_per_round": loads, "raw": rows}


def summarise_e2e(rows: dict[str, list[dict]]) -> dict:
    out = {}
    def med(runs: list[dict], mode: str, key: str) -> float | None:
        return rnd(statistics.median(r[mode][key] for r in runs), 3)

    for case, runs in rows.items():
        statuses: dict[str, int] = {}
        for r in runs:
            for mode in ("serial", "parallel"):
                for s, n in r[mode]["counts"].items():
                    statuses[s] = statuses.get(s, 0) + n
        out[case] = {
            "serial_p50_ms": med(runs, "serial", "p50_ms"),
            "serial_p99_ms": med(runs, "serial", "p99_ms"),
            "serial_per_s": med(runs, "serial", "per_s"),
            "parallel_per_s": med(runs, "parallel", "per_s"),
            "parallel_p50_ms": med(runs, "parallel", "p50_ms"),
            "parallel_p99_ms": med(runs, "parallel", "p99_ms"),
            "api_cpu_us_per_answer": med(runs, "parallel", "api_cpu_us_per_answer"),
            "api_cpu_us_spread": [min(r["parallel"]["api_cpu_us_per_answer"] for r in runs),
                                  max(r["parallel"]["api_cpu_us_per_answer"] for r in runs)],
            "statuses": statuses,
            "expected_status_share": rnd(statuses.get(E2E_EXPECT[case], 0)
                                         / max(1, sum(statuses.values())), 4),
        }
    return out


def ratios(rows: dict[str, list[dict]]) -> dict:
    """Per round, case / reference, then the median over rounds."""
    pairs = [("refused_key", "refused_before"), ("refused_key_uvicorn", "refused_before"),
             ("refused_key", "refused_key_uvicorn"), ("refused_key", "healthz"),
             ("no_key", "refused_key"), ("forged_key", "refused_key"), ("no_key", "healthz")]
    measures = (("serial", "p50_ms"), ("serial", "p99_ms"), ("parallel", "per_s"),
                ("parallel", "api_cpu_us_per_answer"))
    out = {}
    for a, b in pairs:
        if a not in rows or b not in rows:
            continue
        for mode, key in measures:
            per_round = [ra[mode][key] / rb[mode][key] for ra, rb in zip(rows[a], rows[b])
                         if ra[mode][key] and rb[mode][key]]
            if per_round:
                out[f"{a} / {b}: {mode} {key}"] = [rnd(statistics.median(per_round), 3),
                                                   rnd(min(per_round), 3),
                                                   rnd(max(per_round), 3)]
    return out


# --------------------------------------------------------------------------- key expiry

def expiry(db_url: str, cache_s: tuple[float, ...], rounds: int, duration_s: float,
           rate: float, keys_n: int = 8) -> dict:
    """Refusals offered open loop (``rate``/s, ``keys_n`` accounts round robin, as bench
    (f) posts) to one API process per AUTH_CACHE_S value, alternated; the per-second p99
    of the 503s shows whether a key's entry ageing costs anything (api/auth.py reads a key
    in use again in the background once its entry is AUTH_CACHE_S / 2 old, so under this
    load it should never expire)."""
    with Rig(db_url, "auth-expiry") as rig:
        apis = {c: rig.api(f"auth-api-expiry-{c:g}", AUTH_CACHE_S=f"{c:g}") for c in cache_s}
        for api in apis.values():
            api.wait()
        names = [f"exp{os.getpid()}_{i}" for i in range(keys_n)]
        keys = api_server.sign_up(apis[cache_s[0]].port, names)
        reqs = [api_server.post_request(n, keys[n], "expiry") for n in names]
        fill(apis[cache_s[0]], reqs[0])
        rows: dict[str, list[dict]] = {f"{c:g}": [] for c in cache_s}
        for i in range(rounds):
            drain_then_refill(rig.worker, apis[cache_s[0]], reqs[0])
            for c in cache_s if i % 2 == 0 else cache_s[::-1]:
                rows[f"{c:g}"].append(_offer(apis[c], reqs, rate, duration_s))
                log(f"expiry: AUTH_CACHE_S={c:g}: {rows[f'{c:g}'][-1]['summary']}")
        return {"rate_per_s": rate, "duration_s": duration_s, "keys": keys_n, "rounds": rounds,
                "runs": rows, "load_end": load()}


def _offer(api: ApiProcess, reqs: list[str], rate: float, duration_s: float) -> dict:
    fetch_many("127.0.0.1", api.port, reqs * 3, 2)  # warm: every key cached, memo set
    c0 = api.cpu_s()
    out = exp_f.run_loadgen({"mode": "open", "requests": reqs, "rate": rate,
                             "duration_s": duration_s, "max_conns": 512,
                             "timeout_s": exp_f.REQUEST_TIMEOUT_S}, api.port, duration_s + 60)
    cpu = api.cpu_s() - c0
    rec, t0 = out["records"], out["t0"]
    per_s: dict[int, list[float]] = {}
    statuses: dict[str, int] = {}
    for due, st, lat in zip(rec["due"], rec["status"], rec["lat"]):
        statuses[str(st)] = statuses.get(str(st), 0) + 1
        if st == 503 and lat is not None:
            per_s.setdefault(int(due - t0), []).append(lat)
    p99s = [rnd(percentile(per_s[k], 99) * 1000, 2) for k in sorted(per_s)]
    lat = [x for xs in per_s.values() for x in xs]
    summary = {"503_p50_ms": rnd(percentile(lat, 50) * 1000, 3),
               "503_p99_ms": rnd(percentile(lat, 99) * 1000, 2),
               "per_second_p99_median_ms": rnd(statistics.median(p99s), 2) if p99s else None,
               "per_second_p99_max_ms": max(p99s, default=None),
               "api_cpu_us_per_answer": rnd(cpu / max(1, len(rec["status"])) * 1e6, 1),
               "statuses": statuses}
    return {"summary": summary, "per_second_p99_ms": p99s}


# --------------------------------------------------------------------------- (f)

def f_side_by_side(before: str, rounds: int, duration_s: float) -> dict:
    from bench.experiments import exp_f_ab

    refs = [exp_f_ab.WORKTREE, exp_f_ab.short(before)]
    runs = exp_f_ab.alternate("make-up", refs, rounds, duration_s)
    return {"stack": "make-up", "duration_s": duration_s, "rounds": rounds, "refs": refs,
            "runs": runs,
            "medians": {r: exp_f_ab.medians(exp_f_ab.numeric(rows)) for r, rows in runs.items()},
            "spreads": {r: exp_f_ab.spreads(exp_f_ab.numeric(rows)) for r, rows in runs.items()}}


#: What the full-length (f) table shows of each overload phase: (key, label).
F_PHASE_KEYS = (("completion_vs_drain_alone", "completed / drain alone"),
                ("wait_p99_s", "wait p99 (s)"), ("lat_503_p50_ms", "503 p50 (ms)"),
                ("lat_503_p99_ms", "503 p99 (ms)"), ("lat_202_p99_ms", "202 p99 (ms)"))
#: (key, part of the (f) result or None for its top level, label)
F_KEYS = (("drain_rate_per_s", None, "drain alone (jobs/s)"),
          *((key, f"x{n}", f"{n}x: {label}") for n in (3, 10) for key, label in F_PHASE_KEYS),
          ("refusals_per_s", "refusals", "item 4: refusals/s (one API process)"),
          ("api_cpu_ms_per_refusal", "refusals", "item 4: API CPU per refusal (ms)"),
          ("lat_503_p99_ms", "refusals", "item 4: 503 p99 (ms)"))


def f_row(result: dict) -> dict:
    return {label: (result.get(part) or {}).get(key) if part else result.get(key)
            for key, part, label in F_KEYS}


def f_full(recorded: dict | None) -> dict:
    """One full-length (f) on make-up with the work tree, beside the run recorded before."""
    load0 = load()
    now = exp_f.run("make-up")
    return {"now": f_row(now), "now_commit": now["commit"], "now_auth": now.get("auth"),
            "series": {p: now[p].get("series") for p in ("x3", "x10")},
            "load_before": load0, "load_after": load(),
            "others_cores_x10": now["x10"]["cpu_during_offer"].get("others_cores"),
            "recorded": f_row(recorded) if recorded else None,
            "recorded_commit": (recorded or {}).get("commit")}


# --------------------------------------------------------------------------- run, section

PARTS = ("micro", "app", "e2e", "expiry", "f_ab", "f_full")


def run(broker: str = "redis", quick: bool = False, rounds: int | None = None,
        before: str | None = BEFORE, f_ab_rounds: int = 3, f_ab_duration: float = 20,
        parts: tuple[str, ...] = PARTS) -> dict:
    t0 = time.time()
    recorded_path = RESULTS / "f_make-up.json"
    recorded = json.loads(recorded_path.read_text()) if recorded_path.exists() else None
    if recorded and recorded.get("auth"):  # a run with keys already: not the "before"
        recorded = None
    out: dict = {"broker": broker, "quick": quick, "load_start": load(),
                 "commit": exp_f.git_commit(), "parts": list(parts)}
    if {"micro", "app", "e2e", "expiry"} & set(parts):
        db_url = pg.create_db(DB)
        try:
            out["schema"] = api_server.migrate(db_url, phase_env("redis", f"fanout={FILL_LIMIT}"))
            log(f"database {DB}: {out['schema']}")
            _in_database(out, db_url, quick, rounds, before, parts)
        finally:
            trouble = pg.drop_db(DB)
            if trouble:
                log(trouble)
    if "f_ab" in parts and f_ab_rounds and before:
        out["f_ab"] = f_side_by_side(before, f_ab_rounds, 10 if quick else f_ab_duration)
    if "f_full" in parts:
        out["f_full"] = f_full(recorded)
    out["load_end"] = load()
    out["wall_s"] = rnd(time.time() - t0, 1)
    return out


def _in_database(out: dict, db_url: str, quick: bool, rounds: int | None,
                 before: str | None, parts: tuple[str, ...]) -> None:
    if "micro" in parts:
        out["micro"] = micro(db_url, reps=3 if quick else 9, n_fast=2000 if quick else 20000,
                             n_miss=100 if quick else 400)
        log("in process (µs per call): " + ", ".join(
            f"{c} {v['median_us']}" for c, v in out["micro"]["cases"].items()))
    if "app" in parts:
        out["app"] = whole_app(db_url, before, rounds=2 if quick else 4,
                               n=1000 if quick else 4000)
        log(f"whole app in process: {out['app']}")
    if "e2e" in parts:
        out["e2e"] = e2e(db_url, before, rounds or (2 if quick else 5),
                         serial_s=1 if quick else 2, parallel_s=1.5 if quick else 3, conns=16)
    if "expiry" in parts:
        out["expiry"] = expiry(db_url, EXPIRY_CACHE_S, rounds=1 if quick else 2,
                               duration_s=8 if quick else 25, rate=EXPIRY_RATE)


def section(r: dict) -> str:
    return auth_section.section(r, expect=E2E_EXPECT, fill_limit=FILL_LIMIT, rerun=RERUN,
                                before=BEFORE)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.experiments.exp_auth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=None, help="end-to-end rounds (default 5)")
    p.add_argument("--before", default=BEFORE, help="the code before keys ('' for none)")
    p.add_argument("--f-ab-rounds", type=int, default=3)
    p.add_argument("--f-ab-duration", type=float, default=20)
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated, among "
                                                             + ", ".join(PARTS))
    args = p.parse_args(argv)
    from bench.harness import lock

    me = lock.acquire()
    try:
        r = run(quick=args.quick, rounds=args.rounds, before=args.before or None,
                f_ab_rounds=args.f_ab_rounds, f_ab_duration=args.f_ab_duration,
                parts=parse_parts(args.parts))
    finally:
        lock.release(me)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "auth_redis.standalone.json").write_text(json.dumps(r))
    print(section(r))


def parse_parts(text: str) -> tuple[str, ...]:
    parts = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}; choose among {', '.join(PARTS)}")
    return parts


if __name__ == "__main__":
    main()
