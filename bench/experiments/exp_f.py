"""(f) The seed's overload experiment through HTTP, end to end.

POST /posts -> database -> broker -> worker -> database -> GET /jobs, on the stack
``make up`` starts (``python -m config.up`` as a subprocess), on the same with SQLite,
and on a production-like stack (RabbitMQ + PostgreSQL + Redis result backend). Each
post's author has 200 followers; one post per request.

Per stack: wait for /healthz, create authors, followers and follows over HTTP (each
account with its own API key, sent as ``Authorization: Bearer``, by code that has keys);
measure the worker's drain rate alone (bursts under the limit, median of 3); offer
3x and 10x that rate open loop (``bench/http_load.py`` in a process of its own)
while sampling the queue depth at 10 Hz; poll GET /jobs for every accepted job
until final; then item 4: one API process's refusals per second and CPU per refusal
with the fanout worker stopped (SIGSTOP) and the queue full.

    python -m bench.experiments.exp_f --stack make-up --duration 10      # alone, without report
    python -m bench.experiments.exp_f --stack prod --submit-path threads  # API_SUBMIT_PATH

Both paths side by side, medians of rounds: ``python -m bench.experiments.exp_submit --part f``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.harness import api_server
from bench.harness.env import OUT, ROOT, rabbitmqctl
from bench.harness.http_load import bearer, fetch_many, get
from bench.harness.procs import cmdline, cpu_s, descendants, free_port
from bench.harness.stats import percentile, rnd

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
QUEUE = "fanout"
STACKS = ("make-up", "make-up-sqlite", "prod")
DEFAULT_STACKS = ("make-up", "prod")
FOLLOWERS = 200
AUTHORS = 8
PROD_VHOST = "floodgate_bench_f"
PROD_DB = "floodgate_bench_f"
#: Not db 8, nor 6, 7, 11, 12, 14 or 15: the test suites' (exp_g: 5, exp_submit: 3, peers: 10).
PROD_REDIS = "redis://127.0.0.1:6379/4"
#: How the API admits a post (API_SUBMIT_PATH): ``async`` (submit_async, the default) or
#: ``threads`` (Celery's blocking publish in the API's store threads); None: inherited.
SUBMIT_PATHS = ("async", "threads")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
#: Floodgate variables the stack must not inherit from whoever runs the bench.
_DROP = ("BROKER_URL", "RESULT_BACKEND", "DATABASE_URL", "METER_URL", "QUEUE_LIMITS",
         "FLOWER_BASIC_AUTH", "API_PORT", "FLOWER_PORT", "FLOODGATE_VAR_DIR",
         "FLOODGATE_BROKER_CMD", "FLOODGATE_GENERATED_PASSWORD", "BENCH_BROKER",
         "BENCH_REDIS_URL", *api_server.SECRET_VARS)
#: A request not answered this long after its due time is a timeout (a failure), so an
#: API that cannot keep up even to refuse does not stretch a phase without bound.
REQUEST_TIMEOUT_S = 10.0
TARGETS = {"completion_ratio": 0.9, "wait_factor": 1.1, "p99_503_s": 0.010, "p99_202_s": 0.025}


def log(msg: str) -> None:
    print(f"[f] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "api", "tasks", "config"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + (" + uncommitted changes in api/tasks/config" if dirty else "")
    except OSError:
        return "?"


def resolve(ref: str) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    return f"{out or ref} (git archive of {ref}, not the work tree)"


# --------------------------------------------------------------------------- processes

def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


PARTS = (("api", "api.main:app"), ("api", "api.serve"), ("worker", "-Q fanout,default"),
         ("worker-aggregation", "-Q aggregation"), ("beat", " beat"), ("flower", "flower"),
         ("honcho", "honcho"), ("broker", "valkey"), ("postgres", "postgres"))


class CpuMeter:
    """CPU seconds of each part of the stack (its processes below config.up) and the
    machine's busy share, between ``__init__`` and ``stop``."""

    def __init__(self, stack: "Stack") -> None:
        self.stack = stack
        self.t0, self.m0, self.p0 = time.time(), machine_busy(), self._snap()

    def _snap(self) -> dict[int, tuple[str, float]]:
        out = {}
        for pid in descendants(self.stack.proc.pid):
            cmd = cmdline(pid)
            part = next((name for name, needle in PARTS if needle in cmd), "other")
            try:
                out[pid] = (part, cpu_s(pid))
            except OSError:
                pass
        return out

    def stop(self) -> dict:
        wall, m1, p1 = time.time() - self.t0, machine_busy(), self._snap()
        parts: dict[str, float] = {}
        for pid, (part, c) in p1.items():
            parts[part] = parts.get(part, 0.0) + c - self.p0.get(pid, (part, 0.0))[1]
        busy = (m1[0] - self.m0[0]) / max(1, m1[1] - self.m0[1])
        return {"wall_s": rnd(wall, 1), "machine_busy_share": rnd(busy),
                "cores_busy": rnd(busy * (os.cpu_count() or 1), 2),
                "parts_cpu_share_of_one_core": {k: rnd(v / wall) for k, v in
                                                sorted(parts.items(), key=lambda kv: -kv[1])}}


class Stack:
    """``python -m config.up`` in its own process group, with this run's environment."""

    def __init__(self, kind: str, limit: int, code_ref: str | None = None,
                 submit_path: str | None = None) -> None:
        self.kind, self.limit = kind, limit
        self.tmp = Path(tempfile.mkdtemp(prefix=f"floodgate_f_{kind}_"))
        code = api_server.export(code_ref, self.tmp / "code") if code_ref else ROOT
        self.code = code
        self.port = free_port()
        env = api_server.api_env({k: v for k, v in os.environ.items() if k not in _DROP})
        self.auth = api_server.has_auth(code)
        env.update(QUEUE_LIMITS=f"{QUEUE}={limit}", API_PORT=str(self.port),
                   FLOWER_PORT=str(free_port()), FLOODGATE_VAR_DIR=str(self.tmp / "var"),
                   PYTHONPATH=str(code), PATH=f"{Path(PY).parent}:{env.get('PATH', '')}")
        if submit_path:
            env["API_SUBMIT_PATH"] = submit_path
        self.submit_path = env.get("API_SUBMIT_PATH", "async (the default)")
        if kind == "make-up-sqlite":
            env["DATABASE_URL"] = f"sqlite:///{self.tmp}/f.db"
        if kind == "prod":
            prod_prepare()
            env.update(BROKER_URL=f"amqp://guest:guest@127.0.0.1:5672/{PROD_VHOST}",
                       RESULT_BACKEND=PROD_REDIS,
                       DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{PROD_DB}")
        up_src = (code / "config" / "up.py").read_text()
        self.var_dir_supported = "FLOODGATE_VAR_DIR" in up_src
        # Where config.up migrates the database itself, the stack is left as make up
        # starts it. Otherwise the bench migrates: a given database before the start,
        # make-up's embedded PostgreSQL once config.up has started it (wait_healthy).
        up_migrates = "config.migrate" in up_src
        self.schema = "by config.up" if up_migrates else None
        self.migrate_embedded = (kind == "make-up" and api_server.has_migrations(code)
                                 and not up_migrates)
        if kind != "make-up" and not up_migrates:
            self.schema = api_server.migrate(env["DATABASE_URL"], env, code)
        # Run from a temp dir holding a copy of the Procfile (imports via PYTHONPATH): any
        # path the stack still resolves against its working directory (./var, beat's
        # schedule file) lands there, never in the shared work tree.
        cwd = self.tmp
        shutil.copy(code / "Procfile", self.tmp / "Procfile")
        (self.tmp / "var").mkdir()
        self.env = env
        OUT.mkdir(parents=True, exist_ok=True)
        self.log_path = OUT / f"f-{kind}{'-' + code_ref if code_ref else ''}-up.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([PY, "-m", "config.up"], cwd=cwd, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.known: set[int] = set()
        self.banner: dict[str, str] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout_s: float = 120) -> float:
        start = time.time()
        while time.time() - start < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"config.up exited (rc {self.proc.returncode}); "
                                   f"see {self.log_path}")
            if self.migrate_embedded and "PostgreSQL ready" in self.log_path.read_text(
                    errors="replace"):
                self._migrate_embedded()
            try:
                (status, _), = fetch_many("127.0.0.1", self.port, [get("/healthz")], 1)
            except OSError:
                status = None
            if status == 200:
                self._read_banner()
                self.known.update(descendants(self.proc.pid))
                return time.time() - start
            time.sleep(0.5)
        raise TimeoutError(f"/healthz not 200 within {timeout_s} s; see {self.log_path}")

    def _migrate_embedded(self) -> None:
        """Migrate config.up's embedded PostgreSQL (user and database ``floodgate``, its
        password in the var dir, its port in the banner)."""
        self.migrate_embedded = False
        port = re.search(r"^\s+database\s+\S+@127\.0\.0\.1:(\d+)/",
                         self.log_path.read_text(errors="replace"), re.MULTILINE).group(1)
        password = (self.tmp / "var" / "pg.password").read_text().strip()
        url = f"postgresql+psycopg://floodgate:{password}@127.0.0.1:{port}/floodgate"
        self.schema = api_server.migrate(url, self.env, self.code) + " (run by the bench)"

    def _read_banner(self) -> None:
        text = self.log_path.read_text(errors="replace")
        for key in ("broker", "results", "database"):
            m = re.search(rf"^\s+{key}\s+(\S+)", text, re.M)
            if m:
                self.banner[key] = m.group(1)
        # The banner masks URLs; the queue's depth is read from the embedded Valkey,
        # whose password config.up keeps in the stack's own var dir.
        valkey_password = self.tmp / "var" / "valkey.password"
        if "***" in self.banner.get("broker", "") and valkey_password.exists():
            self.banner["broker"] = self.banner["broker"].replace(
                "***", valkey_password.read_text().strip(), 1)
        m = re.search(r"^Migrations: (.*)$", text, re.M)
        if m and self.schema == "by config.up":
            self.schema = f"by config.up: {m.group(1)}"
        if "database" not in self.banner and "DATABASE_URL" in self.env:
            self.banner["database"] = self.env["DATABASE_URL"]

    def pids_matching(self, needle: str) -> list[int]:
        pids = descendants(self.proc.pid)
        self.known.update(pids)
        return [p for p in pids if needle in cmdline(p)]

    def api_pid(self) -> int:
        pids = [p for p in descendants(self.proc.pid) if api_server.is_api(cmdline(p))]
        self.known.update(pids)
        return pids[-1]

    def fanout_worker_pids(self) -> list[int]:
        top = [p for p in self.pids_matching("-Q fanout,default")
               if not cmdline(p).startswith("/bin/sh")]
        return top + [c for p in top for c in descendants(p)]

    def stop(self) -> None:
        self.known.update(descendants(self.proc.pid))
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(25)
        except subprocess.TimeoutExpired:
            pass
        for pid in [self.proc.pid, *sorted(self.known)]:  # leftovers: ours only, by PID
            try:
                if pid != self.proc.pid or self.proc.poll() is None:
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()
        if self.kind == "prod":
            prod_cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)


def prod_prepare() -> None:
    import psycopg
    import redis

    rabbitmqctl("delete_vhost", PROD_VHOST)
    rabbitmqctl("add_vhost", PROD_VHOST)
    rabbitmqctl("set_permissions", "-p", PROD_VHOST, "guest", ".*", ".*", ".*")
    redis.Redis.from_url(PROD_REDIS).flushdb()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PROD_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{PROD_DB}"')


def prod_cleanup() -> None:
    import psycopg
    import redis

    rabbitmqctl("delete_vhost", PROD_VHOST)
    try:
        redis.Redis.from_url(PROD_REDIS).flushdb()
    except Exception:  # noqa: BLE001
        pass
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{PROD_DB}" WITH (FORCE)')
    except Exception as exc:  # noqa: BLE001
        log(f"could not drop {PROD_DB}: {exc}")


# --------------------------------------------------------------------------- depth

class DepthSampler(threading.Thread):
    """Ready messages in ``fanout`` every ``interval_s``, read from the broker directly."""

    def __init__(self, broker_url: str, interval_s: float = 0.1) -> None:
        super().__init__(daemon=True, name="depth")
        self.url, self.interval_s = broker_url, interval_s
        self.rows: list[tuple[float, int | None]] = []
        self._halt = threading.Event()
        self._probe = self._make_probe()

    def _make_probe(self):
        if self.url.startswith("redis"):
            import redis

            client = redis.Redis.from_url(self.url)
            keys = [QUEUE + s for s in ("", "\x06\x163", "\x06\x166", "\x06\x169")]

            def probe() -> int:
                with client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.llen(key)
                    return sum(pipe.execute())
            return probe
        import amqp

        vhost = self.url.rsplit("/", 1)[1]
        conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest",
                               virtual_host=vhost)
        conn.connect()
        self._conn = conn
        chan = conn.channel()
        return lambda: chan.queue_declare(QUEUE, passive=True).message_count

    def read(self) -> int | None:
        try:
            return self._probe()
        except Exception:  # noqa: BLE001 - a missed sample is a gap
            return None

    def run(self) -> None:
        nxt = time.time()
        while not self._halt.is_set():
            self.rows.append((time.time(), self.read()))
            nxt += self.interval_s
            self._halt.wait(max(0.0, nxt - time.time()))

    def stop(self) -> list:
        self._halt.set()
        self.join()
        self.close()
        return self.rows

    def close(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


# --------------------------------------------------------------------------- HTTP helpers

def setup_users(port: int, run_tag: str) -> dict[str, str | None]:
    """Authors and their followers over HTTP; author -> API key (None before keys)."""
    authors = [f"f{run_tag}_author{i}" for i in range(AUTHORS)]
    followers = [f"f{run_tag}_fan{i}" for i in range(FOLLOWERS)]
    keys = api_server.sign_up(port, authors + followers)
    api_server.follow_all(port, {f: keys[f] for f in followers}, authors)
    return {a: keys[a] for a in authors}


def post_requests(authors: dict[str, str | None]) -> list[str]:
    """One POST /posts per author, each as that author; request i is reqs[i % len(reqs)]."""
    return [api_server.post_request(a, key, f"overload #f from {a}") for a, key in authors.items()]


def accepted_jobs(rec: dict, req_keys: list[str | None]) -> dict[str, str | None]:
    """Each accepted job's id -> the key of the author who posted it (its status is theirs)."""
    return {j: req_keys[i % len(req_keys)] for i, j in enumerate(rec["job"]) if j}


def run_loadgen(spec: dict, port: int, timeout_s: float) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    spec_path, out_path = OUT / f"f-spec-{stamp}.json", OUT / f"f-load-{stamp}.json"
    spec_path.write_text(json.dumps({"host": "127.0.0.1", "port": port, **spec}))
    proc = subprocess.run([PY, "-m", "bench.harness.http_load", str(spec_path), str(out_path)],
                          cwd=ROOT, timeout=timeout_s, capture_output=True, text=True)
    spec_path.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr[-2000:]}")
    out = json.loads(out_path.read_text())
    out_path.unlink()
    return out


class JobTimes:
    """Per job: submitted, started, finished (epoch s) and state, from GET /jobs/{id};
    falls back to the jobs table plus the worker's log when the API lacks the times."""

    def __init__(self, stack: Stack, req_keys: list[str | None]) -> None:
        self.stack, self.req_keys = stack, req_keys
        self.source = None

    def poll(self, rec: dict, timeout_s: float) -> dict[str, dict]:
        """The jobs ``rec`` (a load generator's records) saw accepted, each asked for
        with its author's key."""
        out: dict[str, dict] = {}
        owner = accepted_jobs(rec, self.req_keys)
        pending = list(owner)
        deadline = time.time() + timeout_s
        while pending:
            answers = fetch_many("127.0.0.1", self.stack.port,
                                 [get(f"/jobs/{j}", headers=bearer(owner[j])) for j in pending], 8)
            still = []
            for jid, (status, body) in zip(pending, answers):
                doc = json.loads(body) if status == 200 else {"state": f"http {status}"}
                out[jid] = doc
                if doc.get("state") not in ("succeeded", "failed"):
                    still.append(jid)
            pending = still
            if not pending or time.time() > deadline:
                break
            time.sleep(1.0)
        have_times = any("started_at" in d for d in out.values())
        self.source = "GET /jobs" if have_times else "jobs table + worker log (fallback)"
        if not have_times:
            self._fallback(out)
        return out

    def _fallback(self, out: dict[str, dict]) -> None:
        from sqlalchemy import bindparam, create_engine, text

        url = self.stack.banner.get("database")
        if url:
            eng = create_engine(url)
            ids = list(out)
            query = text("SELECT id, created_at, updated_at, state FROM jobs WHERE id IN :ids"
                         ).bindparams(bindparam("ids", expanding=True))
            with eng.connect() as conn:
                for i in range(0, len(ids), 500):
                    for jid, created, updated, state in conn.execute(query,
                                                                     {"ids": ids[i:i + 500]}):
                        out[jid]["submitted_at"] = created
                        if state in ("succeeded", "failed"):
                            out[jid]["finished_at"] = updated
            eng.dispose()
        pattern = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): \w+/[^\]]*\] Task "
                             r"tasks\.fanout\.fanout_post\[([0-9a-f-]{36})\] succeeded in "
                             r"([0-9.e-]+)s")
        from datetime import datetime

        for m in pattern.finditer(self.stack.log_path.read_text(errors="replace")):
            jid = m.group(2)
            if jid in out:
                end = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                out[jid]["started_at"] = end - float(m.group(3))
                out[jid].setdefault("finished_at", end)


# --------------------------------------------------------------------------- phases

def settle(sampler_url: str, timeout_s: float = 60) -> float:
    """Wait until the fanout queue is empty (then 1 s more for in-flight jobs)."""
    s = DepthSampler(sampler_url)
    start = time.time()
    while time.time() - start < timeout_s:
        if s.read() == 0:
            break
        time.sleep(0.25)
    s.close()
    time.sleep(1.0)
    return time.time() - start


def calibrate(stack: Stack, reqs: list[str], jobs: JobTimes, reps: int = 3) -> dict:
    rates, details = [], []
    for rep in range(reps):
        n = stack.limit
        # The queue is filled while the worker is stopped, so the drain measured is the
        # worker's alone from a full queue, not the pace at which the burst arrived.
        worker = stack.fanout_worker_pids()
        signal_all(worker, signal.SIGSTOP)
        try:
            out = run_loadgen({"mode": "burst", "requests": reqs, "n": n, "conns": 4},
                              stack.port, 120)
        finally:
            meter = CpuMeter(stack)
            signal_all(worker, signal.SIGCONT)
        rec = out["records"]
        ids = [j for j in rec["job"] if j]
        times = jobs.poll(rec, timeout_s=60)
        cpu = meter.stop()
        parts = sum(cpu["parts_cpu_share_of_one_core"].values())
        starts = [d["started_at"] for d in times.values() if d.get("started_at")]
        ends = [d["finished_at"] for d in times.values() if d.get("finished_at")]
        done = sum(1 for d in times.values() if d.get("state") == "succeeded")
        rate = done / (max(ends) - min(starts)) if starts and ends and max(ends) > min(starts) else None
        details.append({"sent": n, "accepted": len(ids), "succeeded": done,
                        "drain_s": rnd(max(ends) - min(starts), 3) if starts and ends else None,
                        "statuses": _counts(rec["status"]), "rate": rnd(rate, 2),
                        "machine_cores_busy": cpu["cores_busy"],
                        "others_cores": rnd(max(0.0, cpu["cores_busy"] - parts), 2)})
        if rate:
            rates.append(rate)
        log(f"calibration {rep + 1}: {len(ids)}/{n} accepted, {done} done, {rnd(rate, 1)} jobs/s "
            f"(other processes on the machine: {details[-1]['others_cores']} cores)")
        settle(stack.banner["broker"], 30)
    if not rates:
        raise RuntimeError(f"calibration measured no drain rate: {details}")
    return {"drain_rate_per_s": rnd(statistics.median(rates), 2), "reps": details}


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _counts(statuses: list) -> dict:
    out: dict[str, int] = {}
    for s in statuses:
        key = {None: "not sent", -1: "connection error", -2: "timeout"}.get(s, str(s))
        out[key] = out.get(key, 0) + 1
    return out


def overload(stack: Stack, reqs: list[str], jobs: JobTimes, factor: float, drain: float,
             duration_s: float, pin_cpu: int | None) -> dict:
    rate = factor * drain
    sampler = DepthSampler(stack.banner["broker"])
    api_pid = stack.api_pid()
    api_cpu0, wall0 = cpu_s(api_pid), time.time()
    meter = CpuMeter(stack)
    sampler.start()
    spec = {"mode": "open", "requests": reqs, "rate": rate, "duration_s": duration_s,
            "max_conns": 512, "timeout_s": REQUEST_TIMEOUT_S, "pin_cpu": pin_cpu}
    load = run_loadgen(spec, stack.port, duration_s + 120)
    api_cpu = cpu_s(api_pid) - api_cpu0
    api_wall = time.time() - wall0
    cpu = meter.stop()
    grace = stack.limit / drain + 3
    time.sleep(grace)
    samples = sampler.stop()
    rec = load["records"]
    times = jobs.poll(rec, timeout_s=max(30.0, 3 * stack.limit / drain))
    settle(stack.banner["broker"], 60)
    out = summarise(load, samples, times, jobs.source, factor, rate, drain, stack.limit,
                    duration_s, api_cpu, api_wall)
    parts = sum((cpu.get("parts_cpu_share_of_one_core") or {}).values())
    cpu["others_cores"] = rnd(max(0.0, (cpu.get("cores_busy") or 0) - parts
                                  - (load.get("loadgen_cpu_s", 0) / max(1e-9, cpu["wall_s"]))), 2)
    out["cpu_during_offer"] = cpu
    return out


def summarise(load: dict, samples: list, times: dict, source: str | None, factor: float,
              rate: float, drain: float, limit: int, duration_s: float, api_cpu: float,
              api_wall: float) -> dict:
    rec, t0, t_end = load["records"], load["t0"], load["t_end"]
    n = len(rec["status"])
    statuses = _counts(rec["status"])
    lat = {"202": [], "503": [], "other": []}
    for st, l in zip(rec["status"], rec["lat"]):
        if st is None or l is None:
            continue
        lat["202" if st == 202 else "503" if st == 503 else "other"].append(l)
    lat_due = [l for st, l in zip(rec["status"], rec["lat_due"]) if l is not None and st == 202]
    bad = {k: v for k, v in statuses.items() if k not in ("202", "503")}
    vals = [d for d in times.values()]
    waits = [d["started_at"] - d["submitted_at"] for d in vals
             if d.get("started_at") is not None and d.get("submitted_at") is not None]
    finished = [d["finished_at"] for d in vals if d.get("finished_at") is not None]
    steady0 = t0 + min(5.0, duration_s / 4)
    in_steady = sum(1 for f in finished if steady0 <= f < t_end)
    completion = in_steady / (t_end - steady0)
    depths = [d for _, d in samples if d is not None]
    states = {}
    for d in vals:
        states[d.get("state")] = states.get(d.get("state"), 0) + 1
    wait_bound = TARGETS["wait_factor"] * limit / drain
    p99_202, p99_503 = percentile(lat["202"], 99), percentile(lat["503"], 99)
    out = {
        "factor": factor, "offered_rate_per_s": rnd(rate, 1), "duration_s": duration_s,
        "offered": n, "accepted_202": statuses.get("202", 0), "refused_503": statuses.get("503", 0),
        "other_statuses": bad, "other_5xx": sum(v for k, v in bad.items()
                                                if k.isdigit() and int(k) >= 500),
        "statuses": statuses, "client_errors": {k: v for k, v in rec.get("errors", {}).items()
                                                if not k.startswith("503")},
        "non_queue_full_503": {k: v for k, v in rec.get("errors", {}).items()
                               if k.startswith("503")},
        "achieved_send_rate_per_s": rnd(
            sum(1 for s in rec["sent"] if s is not None) / (t_end - t0), 1),
        "job_states": states, "timing_source": source,
        "completion_rate_per_s": rnd(completion, 2),
        "completion_vs_drain_alone": rnd(completion / drain),
        "wait_p50_s": rnd(percentile(waits, 50)), "wait_p99_s": rnd(percentile(waits, 99)),
        "wait_max_s": rnd(max(waits, default=None)), "wait_bound_s": rnd(wait_bound),
        "waits_measured": len(waits),
        "lat_202_p50_ms": _ms(percentile(lat["202"], 50)), "lat_202_p99_ms": _ms(p99_202),
        "lat_503_p50_ms": _ms(percentile(lat["503"], 50)), "lat_503_p99_ms": _ms(p99_503),
        "lat_other_p99_ms": _ms(percentile(lat["other"], 99)),
        "lat_202_from_due_p99_ms": _ms(percentile(lat_due, 99)),
        "depth_max": max(depths, default=None), "limit": limit,
        "depth_samples": len(depths), "depth_missed_samples": len(samples) - len(depths),
        "loadgen_cpu_share": load["loadgen_cpu_share"], "loadgen_cpu_s": load["loadgen_cpu_s"],
        "loadgen_pinned_cpu": load.get("pinned_cpu"),
        "loadgen_dispatch_max_lag_ms": _ms(load["dispatch_max_lag_s"]),
        "loadgen_peak_conns": load["peak_conns"],
        "api_cpu_s": rnd(api_cpu, 2), "api_cpu_share": rnd(api_cpu / api_wall),
    }
    out["targets"] = {
        "completion": [out["completion_vs_drain_alone"], TARGETS["completion_ratio"],
                       completion / drain >= TARGETS["completion_ratio"]],
        "wait_p99": [out["wait_p99_s"], out["wait_bound_s"],
                     None if not waits else percentile(waits, 99) <= wait_bound],
        "p99_503": [out["lat_503_p99_ms"], TARGETS["p99_503_s"] * 1000,
                    None if p99_503 is None else p99_503 <= TARGETS["p99_503_s"]],
        "p99_202": [out["lat_202_p99_ms"], TARGETS["p99_202_s"] * 1000,
                    None if p99_202 is None else p99_202 <= TARGETS["p99_202_s"]],
        "depth": [out["depth_max"], limit,
                  None if not depths else max(depths) <= limit],
        "no_other_5xx": [out["other_5xx"], 0, out["other_5xx"] == 0],
    }
    out["series"] = per_second(rec, samples, finished, t0, t_end)
    return out


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def per_second(rec: dict, samples: list, finished: list, t0: float, t_end: float) -> dict:
    """Answers (202, 503, other) and completions per second of the time they happened;
    latency percentiles per second of the requests' due time."""
    answered = [d + l for d, l in zip(rec["due"], rec["lat_due"]) if d is not None and l is not None]
    last = max([t_end, *answered, *[f for f in finished if f < t_end + 120]])
    secs = int(last - t0) + 1
    ok, ref, other, comp = [0] * secs, [0] * secs, [0] * secs, [0] * secs
    l202: list[list] = [[] for _ in range(secs)]
    l503: list[list] = [[] for _ in range(secs)]
    for due, st, l, ld in zip(rec["due"], rec["status"], rec["lat"], rec["lat_due"]):
        if due is None or ld is None:
            continue
        k = min(secs - 1, max(0, int(due + ld - t0)))
        kd = min(secs - 1, max(0, int(due - t0)))
        if st == 202:
            ok[k] += 1
            l202[kd].append(l)
        elif st == 503:
            ref[k] += 1
            l503[kd].append(l)
        else:
            other[k] += 1
    for f in finished:
        k = int(f - t0)
        if 0 <= k < secs:
            comp[k] += 1
    pct = lambda xs, q: _ms(percentile([x for x in xs if x is not None], q))  # noqa: E731
    return {
        "t": list(range(secs)), "ok": ok, "refused": ref, "other": other, "completed": comp,
        "lat202_p50": [pct(x, 50) for x in l202], "lat202_p99": [pct(x, 99) for x in l202],
        "lat503_p50": [pct(x, 50) for x in l503], "lat503_p99": [pct(x, 99) for x in l503],
        "depth": [(rnd(t - t0, 2), d) for t, d in samples],
    }


def refusal_capacity(stack: Stack, reqs: list[str], conns: int, duration_s: float,
                     pin_cpu: int | None) -> dict:
    """Item 4: with the fanout worker stopped and the queue full, how many refusals per
    second one API process answers, and its CPU seconds per refusal."""
    worker = stack.fanout_worker_pids()
    if not worker:
        return {"error": "fanout worker not found"}
    signal_all(worker, signal.SIGSTOP)
    try:
        fill = run_loadgen({"mode": "burst", "requests": reqs, "n": stack.limit + 20,
                            "conns": 2}, stack.port, 120)
        sampler = DepthSampler(stack.banner["broker"])
        depth_before = sampler.read()
        api = stack.api_pid()
        c0, w0 = cpu_s(api), time.time()
        meter = CpuMeter(stack)
        out = run_loadgen({"mode": "closed", "requests": reqs, "conns": conns,
                           "duration_s": duration_s, "pin_cpu": pin_cpu}, stack.port,
                          duration_s + 60)
        c1, w1 = cpu_s(api), time.time()
        cpu = meter.stop()
        depth_after = sampler.read()
        sampler.close()
    finally:
        signal_all(worker, signal.SIGCONT)
    counts = out["counts"]
    refused = counts.get("503", 0)
    wall = out["t_end"] - out["t0"]
    lat503 = out["latency"].get("503", [])
    result = {
        "conns": conns, "duration_s": rnd(wall, 2), "fill_statuses": _counts(
            fill["records"]["status"]), "depth_before": depth_before, "depth_after": depth_after,
        "counts": counts, "refusals_per_s": rnd(refused / wall, 1),
        "api_cpu_s": rnd(c1 - c0, 3), "api_cpu_share": rnd((c1 - c0) / (w1 - w0)),
        "api_cpu_ms_per_refusal": rnd((c1 - c0) / refused * 1000, 3) if refused else None,
        "lat_503_p50_ms": _ms(percentile(lat503, 50)), "lat_503_p99_ms": _ms(percentile(lat503, 99)),
        "loadgen_cpu_share": out["loadgen_cpu_share"], "loadgen_pinned_cpu": out.get("pinned_cpu"),
        "cpu_during_blast": cpu, "non_queue_full_503": out.get("errors", {}),
    }
    log(f"item 4: {result['refusals_per_s']} refusals/s, {result['api_cpu_ms_per_refusal']} ms "
        f"API CPU each, counts {counts}")
    return result


def run(stack_kind: str, limit: int = 60, duration_s: float = 60, factors=(3, 10),
        refusal_conns: int = 16, refusal_s: float = 10, pin_cpu: int | None = None,
        code_ref: str | None = None, submit_path: str | None = None) -> dict:
    t_start = time.time()
    out = {"stack": stack_kind, "limit": limit, "duration_s": duration_s,
           "commit": resolve(code_ref) if code_ref else git_commit(), "followers_per_author": FOLLOWERS,
           "authors": AUTHORS, "cores": os.cpu_count()}
    stack = Stack(stack_kind, limit, code_ref, submit_path)
    out["submit_path"] = stack.submit_path
    try:
        out["startup_s"] = rnd(stack.wait_healthy(), 1)
        out["banner"] = {k: re.sub(r"//[^@/]*@", "//", v) for k, v in stack.banner.items()}
        out["var_dir_env_supported"] = stack.var_dir_supported
        log(f"{stack_kind} (API_SUBMIT_PATH {stack.submit_path}): healthy in {out['startup_s']} s on port {stack.port} {out['banner']}")
        t = time.time()
        authors = setup_users(stack.port, f"{os.getpid() % 10000}")
        out["setup_s"] = rnd(time.time() - t, 1)
        out["auth"] = "API key per author (Authorization: Bearer)" if stack.auth else "none"
        out["schema"] = stack.schema
        log(f"setup: {AUTHORS} authors x {FOLLOWERS} followers in {out['setup_s']} s "
            f"(authentication: {out['auth']})")
        reqs = post_requests(authors)
        jobs = JobTimes(stack, list(authors.values()))
        out["calibration"] = calibrate(stack, reqs, jobs)
        drain = out["calibration"]["drain_rate_per_s"]
        out["drain_rate_per_s"] = drain
        out["timing_source"] = jobs.source
        for factor in factors:
            log(f"overload {factor}x: {factor * drain:.1f} posts/s for {duration_s} s")
            r = overload(stack, reqs, jobs, factor, drain, duration_s, pin_cpu)
            out[f"x{factor:g}"] = r
            log(f"  {r['statuses']}, completion {r['completion_rate_per_s']}/s "
                f"({r['completion_vs_drain_alone']}), wait p99 {r['wait_p99_s']} s "
                f"(bound {r['wait_bound_s']}), 202 p99 {r['lat_202_p99_ms']} ms, 503 p99 "
                f"{r['lat_503_p99_ms']} ms, depth max {r['depth_max']}, loadgen CPU "
                f"{r['loadgen_cpu_share']}")
        out["refusals"] = refusal_capacity(stack, reqs, refusal_conns, refusal_s, pin_cpu)
        out["worker_log_errors"] = _log_errors(stack.log_path)
    finally:
        stack.stop()
        if stack.log_path.exists():
            shutil.copy(stack.log_path, stack.log_path.with_suffix(".last.log"))
    out["wall_s"] = rnd(time.time() - t_start, 1)
    return out


def _log_errors(path: Path) -> dict:
    """Counts of ERROR / Traceback lines in the stack's combined log, and a few examples."""
    lines = path.read_text(errors="replace").splitlines()
    bad = [l for l in lines if " ERROR" in l or "Traceback" in l or "CRITICAL" in l]
    return {"count": len(bad), "examples": bad[:5]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.experiments.exp_f", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stack", default=",".join(DEFAULT_STACKS))
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--pin-loadgen", type=int, default=None)
    p.add_argument("--code-ref", default=None, help="run an earlier commit's code (git archive)")
    p.add_argument("--submit-path", choices=SUBMIT_PATHS, default=None,
                   help="API_SUBMIT_PATH of the stack's API (default: inherited, else async)")
    args = p.parse_args(argv)
    for kind in args.stack.split(","):
        r = run(kind, limit=args.limit, duration_s=args.duration, pin_cpu=args.pin_loadgen,
                code_ref=args.code_ref, submit_path=args.submit_path)
        OUT.mkdir(parents=True, exist_ok=True)
        name = (f"f_{kind}{'_' + args.code_ref if args.code_ref else ''}"
                f"{'_' + args.submit_path if args.submit_path else ''}.standalone.json")
        (OUT / name).write_text(json.dumps(r))
        log(f"wrote bench/out/{name}")


if __name__ == "__main__":
    main()
