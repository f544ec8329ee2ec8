"""(peers) Floodgate next to plain Celery, Dramatiq and RQ: one Redis INCR per task.

    python -m bench.run_all --only peers [--broker redis|amqp|both] [--peers-n 20000]
        [--peers-rounds 3] [--peers-systems floodgate,dramatiq]
    python -m bench.experiments.exp_peers --broker redis --n 500 --rounds 1   # smoke run, no report
Summaries: bench/results/items/peers_<broker>.json (run_all's ITEMS), section in RESULTS.md.

Systems, each one worker process on the same broker (Redis db 10, the RabbitMQ vhost
``floodgate_bench``; bench/env.py):

* **floodgate**: its defaults, ``celery -A config worker -Q fanout`` (Floodgate's pool,
  the queue's prefetch, late acks; publishes through its guarded transport).
* **celery solo p64**: plain Celery's fastest setting (bench (e)): ``-P solo
  --prefetch-multiplier 64``, early acks. **celery prefork**: plain Celery's defaults.
* **dramatiq**: current release, ``--processes 1`` with its default 8 threads; on
  RabbitMQ with and without publisher confirms (``confirm_delivery``), and with confirms
  on queues a policy makes classic queue version 2 (``dramatiq confirms cqv2``): the
  version Floodgate declares, which Dramatiq leaves to the broker's default (1).
* **rq**: current release, one ``rq worker`` (Redis only).
* **floodgate bare publisher** (RabbitMQ): a diagnostic, not a way to use Floodgate.
  Floodgate's worker and queue, and Celery's message, each published by py-amqp alone
  instead of ``send_task`` (``exp_shape.bare_sender``): what Celery's and kombu's send
  path costs, end to end.

The task increments a counter in Redis db 10; completion is read by polling it.
Measures, per round (rounds alternate the systems; medians reported):
**enqueue** (N submits from one thread, no worker), **drain** (those N queued, start
the worker: first to last completion, and from the worker's start), **end to end**
(worker running, submit N from one thread: first submit to last completion), and the
CPU each process spent per task in it, read from /proc.
Memory: peak RSS (``VmHWM``) of each worker process (prefork: parent and largest
child) after its runs, and of Floodgate's API process after ``API_POSTS`` POST /posts.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from bench.harness import env as _env_mod  # light: RQ's work horse imports this module per job
from bench.harness.env import OUT, RESULTS, ROOT, phase_env
from bench.harness.procs import stop_group

# Smoke runs while another bench run holds db 10's lock: PEERS_REDIS_URL (a Redis db of
# your own) and PEERS_VHOST (a vhost of your own) move every part of this experiment
# there, subprocesses included. The full run uses the bench's own (bench/env.py).
if os.environ.get("PEERS_REDIS_URL"):
    _env_mod.REDIS_URL = os.environ["PEERS_REDIS_URL"]
if os.environ.get("PEERS_VHOST"):
    _env_mod.VHOST = os.environ["PEERS_VHOST"]
    _env_mod.AMQP_URL = f"amqp://guest:guest@127.0.0.1:5672/{_env_mod.VHOST}"
REDIS_URL = _env_mod.REDIS_URL

N = 20_000
ROUNDS = 3
COUNTER = "bench:peers:count"
QUEUE = "peers"  # Dramatiq's and RQ's queue; Celery's are fanout (Floodgate), bench_plain
API_POSTS = 2000
BIN = Path(sys.executable).parent
ROLE = os.environ.get("PEERS_ROLE", "")


@functools.cache
def _counter() -> redis.Redis:
    return redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", REDIS_URL))


def incr() -> None:
    """The task: one INCR (RQ imports it by name: bench.experiments.exp_peers.incr)."""
    _counter().incr(COUNTER)


# --- what each worker process imports (PEERS_ROLE) ------------------------------------
if ROLE == "floodgate":  # celery -A config worker -I bench.experiments.exp_peers
    from config import app as _fg_app

    _fg_app.task(name="peers.incr", ignore_result=True)(incr)
elif ROLE == "celery":  # celery -A bench.experiments.exp_peers worker
    from bench.harness.plain_app import make_plain_app

    app = make_plain_app(os.environ["BROKER_URL"], "peers")
    app.task(name="peers.incr", ignore_result=True)(incr)
elif ROLE == "dramatiq":  # dramatiq bench.experiments.exp_peers
    import dramatiq

    def _dramatiq_broker():
        url = os.environ["BROKER_URL"]
        if url.startswith("redis"):
            from dramatiq.brokers.redis import RedisBroker

            return RedisBroker(url=url)
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url,
                              confirm_delivery=os.environ.get("PEERS_CONFIRM") == "1")

    dramatiq.set_broker(_dramatiq_broker())
    dramatiq_incr = dramatiq.actor(incr, actor_name="peers_incr", queue_name=QUEUE,
                                   max_retries=0)


FLOODGATE = ["celery", "-A", "config", "worker", "-Q", "fanout",
             "-I", "bench.experiments.exp_peers"]
DRAMATIQ = ["dramatiq", "bench.experiments.exp_peers", "--processes", "1", "--queues", QUEUE]
#: name -> (role, worker argv after the program, brokers, extra env)
SYSTEMS = {
    "floodgate": ("floodgate", FLOODGATE, ("redis", "amqp"), {}),
    "celery solo p64": ("celery", ["celery", "-A", "bench.experiments.exp_peers", "worker", "-Q",
                                   "bench_plain", "-P", "solo", "--prefetch-multiplier", "64"],
                        ("redis", "amqp"), {}),
    "celery prefork": ("celery", ["celery", "-A", "bench.experiments.exp_peers", "worker", "-Q",
                                  "bench_plain"], ("redis", "amqp"), {}),
    "dramatiq": ("dramatiq", DRAMATIQ, ("redis",), {}),
    "dramatiq confirms": ("dramatiq", DRAMATIQ, ("amqp",), {"PEERS_CONFIRM": "1"}),
    "dramatiq confirms cqv2": ("dramatiq", DRAMATIQ, ("amqp",),
                               {"PEERS_CONFIRM": "1", "PEERS_CQV2": "1"}),
    "dramatiq no confirms": ("dramatiq", DRAMATIQ, ("amqp",), {"PEERS_CONFIRM": "0"}),
    "rq": ("rq", ["rq", "worker", "--url", REDIS_URL, QUEUE], ("redis",), {}),
    # A diagnostic, not a way to use Floodgate: its worker and queue, with each message
    # published by bare py-amqp instead of send_task (bench/experiments/exp_shape.py).
    "floodgate bare publisher": ("floodgate", FLOODGATE, ("amqp",), {"PEERS_BARE": "1"}),
}
CELERY_LEAN = ["--loglevel=WARNING", "--without-mingle", "--without-gossip"]


def systems_for(broker: str, only: list[str] | None = None) -> list[str]:
    return [s for s, spec in SYSTEMS.items() if broker in spec[2] and (not only or s in only)]


def _env(broker: str, system: str) -> dict[str, str]:
    role, _, _, extra = SYSTEMS[system]
    return {**phase_env(broker, "fanout=1000000"), "PEERS_ROLE": role, **extra}


# --- submitting -----------------------------------------------------------------------
def _submitter(system: str):
    """A function submitting one task, and a close; built in the driver process."""
    role = SYSTEMS[system][0]
    if role == "floodgate":
        from config import app as fg

        fg.conf.task_send_sent_event = False
        if os.environ.get("PEERS_BARE") == "1":
            from bench.experiments.exp_shape import bare_sender

            send, _, close = bare_sender(fg, _env_mod.VHOST)
            return send, close
        producer = fg.amqp.Producer(fg.connection_for_write(), auto_declare=True)
        send = lambda: fg.send_task("peers.incr", queue="fanout", ignore_result=True,  # noqa: E731
                                    producer=producer)
        return send, lambda: producer.connection.release()
    if role == "celery":
        from bench.harness.plain_app import make_plain_app

        plain = make_plain_app(os.environ["BROKER_URL"], "peers-driver")
        producer = plain.amqp.Producer(plain.connection_for_write(), auto_declare=True)
        send = lambda: plain.send_task("peers.incr", ignore_result=True,  # noqa: E731
                                       producer=producer)
        return send, lambda: producer.connection.release()
    if role == "dramatiq":
        return dramatiq_incr.send, lambda: dramatiq.get_broker().close()
    from rq import Queue  # rq

    queue = Queue(QUEUE, connection=redis.Redis.from_url(REDIS_URL))
    return (lambda: queue.enqueue(incr)), lambda: None


def _submit(send, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        send()
    return time.perf_counter() - start


def _wait_count(n: int, timeout_s: float, started: float) -> dict:
    """Poll the counter every 5 ms until it reaches n: first and last completion times."""
    client, first = _counter(), None
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        got = int(client.get(COUNTER) or 0)
        now = time.perf_counter()
        if got and first is None:
            first = now
        if got >= n:
            return {"first_s": first - started, "last_s": now - started, "done": got}
        time.sleep(0.005)
    return {"first_s": None if first is None else first - started, "last_s": None,
            "done": int(client.get(COUNTER) or 0), "incomplete": True}


# --- worker processes -----------------------------------------------------------------
class PeerWorker:
    def __init__(self, broker: str, system: str) -> None:
        _, argv, _, _ = SYSTEMS[system]
        argv = [str(BIN / argv[0]), *argv[1:]]
        if argv[0].endswith("celery"):
            argv += CELERY_LEAN
        OUT.mkdir(parents=True, exist_ok=True)
        self.log = open(OUT / f"peers-{system.replace(' ', '_')}-{broker}.log", "ab")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=_env(broker, system), stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.perf_counter()

    def peak_rss_kb(self) -> dict:
        """VmHWM of the worker and of its largest child (prefork, Dramatiq's fork, RQ's)."""
        main = _vmhwm(self.proc.pid)
        children = [_vmhwm(c) for c in _children(self.proc.pid)]
        return {"main_kb": main, "child_max_kb": max(children, default=None),
                "children": len(children)}

    def stop(self) -> None:
        stop_group(self.proc, 30)
        self.log.close()


def _vmhwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    out = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        out += [int(p) for p in path.read_text().split()]
    return out + [g for c in out for g in _children(c)]


#: Processes whose CPU an end-to-end run is charged, besides the publisher (the driver).
SERVERS = {"rabbitmq": "beam.smp", "redis": "redis-server"}
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pids) -> float:
    """User + system CPU seconds of these processes (/proc/<pid>/stat fields 14 and 15)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def server_pids() -> dict[str, list[int]]:
    """The processes of each server in SERVERS (``pgrep -x``)."""
    found = {}
    for name, program in SERVERS.items():
        out = subprocess.run(["pgrep", "-x", program], capture_output=True, text=True,
                             check=False)
        found[name] = [int(p) for p in out.stdout.split()]
    return found


def _cpu_snapshot(worker_pid: int, servers: dict | None = None) -> tuple[dict, dict]:
    """CPU seconds so far of the worker (with its children) and of each server process.
    The servers are shared by everything on the machine: read them on an idle one."""
    servers = server_pids() if servers is None else servers
    return servers, {"worker": _cpu_s([worker_pid, *_children(worker_pid)]),
                     **{name: _cpu_s(pids) for name, pids in servers.items()}}


# --- one round of one system, in a fresh interpreter (settings are read once) ------------
def _brokers():
    from bench.harness import broker as brokers  # imports config.queues: not at module level

    brokers.REDIS_URL, brokers.VHOST = _env_mod.REDIS_URL, _env_mod.VHOST
    return brokers


def reset(broker: str) -> None:
    brokers = _brokers()

    brokers.reset(broker)  # db 10 except the lock; the bench vhost's Celery queues
    if broker == "amqp":
        import amqp

        for queue in (QUEUE, f"{QUEUE}.DQ", f"{QUEUE}.XQ"):
            with brokers._amqp_channel() as channel:
                try:
                    channel.queue_delete(queue)
                except amqp.exceptions.NotFound:
                    pass


CQV2_POLICY = "floodgate-bench-peers-cqv2"


def _cqv2_policy(on: bool) -> None:
    """A policy giving Dramatiq's queues classic queue version 2 (its own declarations
    name no version), set for one round and cleared after it."""
    if on:
        _env_mod.rabbitmqctl("set_policy", "-p", _env_mod.VHOST, CQV2_POLICY,
                             rf"^{QUEUE}(\.DQ|\.XQ)?$", '{"queue-version": 2}',
                             "--apply-to", "queues")
    else:
        _env_mod.rabbitmqctl("clear_policy", "-p", _env_mod.VHOST, CQV2_POLICY)


def one_round(broker: str, system: str, n: int, timeout_s: float) -> dict:
    cqv2 = broker == "amqp" and os.environ.get("PEERS_CQV2") == "1"
    reset(broker)
    if cqv2:
        _cqv2_policy(True)
    try:
        return _one_round(broker, system, n, timeout_s)
    finally:
        if cqv2:
            _cqv2_policy(False)
            reset(broker)


def _one_round(broker: str, system: str, n: int, timeout_s: float) -> dict:
    send, close = _submitter(system)
    # enqueue: no worker; drain: start one on the N queued
    enqueue_s = _submit(send, n)
    worker = PeerWorker(broker, system)
    try:
        drain = _wait_count(n, timeout_s, worker.started)
        # end to end: the worker is up and idle; submit N more while it runs
        _counter().set(COUNTER, 0)
        servers, before = _cpu_snapshot(worker.proc.pid)
        start, submit_cpu = time.perf_counter(), time.process_time()
        submit_s = _submit(send, n)
        submit_cpu = time.process_time() - submit_cpu
        e2e = _wait_count(n, timeout_s, start)
        _, after = _cpu_snapshot(worker.proc.pid, servers)
        rss = worker.peak_rss_kb()
    finally:
        worker.stop()
        close()
    out = {"enqueue_rate": n / enqueue_s, "e2e_submit_rate": n / submit_s, "rss": rss,
           "e2e_cpu_us": {"publisher": 1e6 * submit_cpu / n,
                          **{k: 1e6 * (after[k] - before[k]) / n for k in before}}}
    if drain.get("last_s") is not None:
        span = drain["last_s"] - drain["first_s"]
        out.update(drain_rate=(n - 1) / span if span > 0 else None,
                   drain_with_start_rate=n / drain["last_s"], drain_first_s=drain["first_s"])
    else:
        out.update(drain_rate=None, drain_incomplete=drain)
    out["e2e_rate"] = n / e2e["last_s"] if e2e.get("last_s") else None
    if e2e.get("last_s") is None:
        out["e2e_incomplete"] = e2e
    return out


def api_peak_rss(broker: str, posts: int = API_POSTS) -> dict:
    """Floodgate's API (``python -m api.serve``, or uvicorn before it): VmHWM after
    ``posts`` POST /posts, each from one of 50 accounts with its own API key."""
    import httpx

    from bench.harness import api_server
    from bench.harness.http_load import bearer

    reset(broker)
    env = api_server.api_env(phase_env(broker, "fanout=1000000"))
    api_server.migrate(env["DATABASE_URL"], env)
    port = 18000 + os.getpid() % 1000
    log = open(OUT / f"peers-api-{broker}.log", "ab")
    proc = subprocess.Popen(api_server.api_command(port), cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=url, timeout=10) as client:
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        return {"error": f"the API did not start; see {log.name}"}
                    time.sleep(0.3)
            # Names unique to this run: the bench database outlives it.
            names = [f"peer{os.getpid()}_{time.time_ns() % 10**9}_{i}" for i in range(50)]
            keys = {}
            for name in names:
                made = client.post("/users", json={"name": name})
                made.raise_for_status()
                keys[name] = made.json().get("api_key")
            codes: dict[int, int] = {}
            for i in range(posts):
                name = names[i % 50]
                body = {"text": "peers"} if keys[name] else {"author": name, "text": "peers"}
                code = client.post("/posts", json=body, headers=bearer(keys[name])).status_code
                codes[code] = codes.get(code, 0) + 1
        argv = api_server.api_command(port)
        command = " ".join([Path(argv[0]).name, *argv[1:argv.index("--host")]])
        return {"peak_rss_kb": _vmhwm(proc.pid), "posts": posts, "status_codes": codes,
                "command": command}
    finally:
        stop_group(proc)
        log.close()
        reset(broker)


def _round_in_subprocess(broker: str, system: str, n: int, timeout_s: float) -> dict:
    out = OUT / f"peers-round-{os.getpid()}-{time.monotonic_ns()}.json"
    env = _env(broker, system)
    env["PEERS_ROLE"] = SYSTEMS[system][0]  # the driver needs the role's submit side
    code = ("import json, sys; from bench.experiments import exp_peers as p; "
            "json.dump(p.one_round(*json.loads(sys.argv[1])), open(sys.argv[2], 'w'))")
    args = json.dumps([broker, system, n, timeout_s])
    with open(OUT / f"peers-driver-{broker}.log", "ab") as log:
        proc = subprocess.run([sys.executable, "-c", code, args, str(out)], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, timeout=3 * timeout_s + 120)
    if proc.returncode != 0:
        return {"error": f"rc {proc.returncode}; see {OUT}/peers-driver-{broker}.log"}
    result = json.loads(out.read_text())
    out.unlink()
    return result


MEASURES = ("enqueue_rate", "drain_rate", "drain_with_start_rate", "e2e_rate")
CPU_PARTS = ("publisher", "worker", "rabbitmq", "redis")


def run(broker: str, n: int = N, rounds: int = ROUNDS, systems: list[str] | None = None,
        timeout_s: float = 300, api_posts: int = API_POSTS) -> dict:
    from bench.harness.stats import median, rnd

    names = systems_for(broker, systems)
    per: dict[str, list[dict]] = {s: [] for s in names}
    for r in range(rounds):  # alternate: each round runs every system once, order rotated
        order = names[r % len(names):] + names[:r % len(names)]
        for system in order:
            print(f"[peers] {broker} round {r + 1}/{rounds}: {system}", flush=True)
            per[system].append(_round_in_subprocess(broker, system, n, timeout_s))
    summary = {}
    for system, runs in per.items():
        ok = [x for x in runs if "error" not in x]
        row = {m: rnd(median([x[m] for x in ok if x.get(m)]), 1) for m in MEASURES}
        row["rounds_ok"] = len(ok)
        row["peak_rss_mb"] = rnd(max((x["rss"]["main_kb"] or 0 for x in ok), default=0) / 1024, 1)
        child = [x["rss"]["child_max_kb"] for x in ok if x["rss"]["child_max_kb"]]
        row["child_peak_rss_mb"] = rnd(max(child) / 1024, 1) if child else None
        cpu = [x["e2e_cpu_us"] for x in ok if x.get("e2e_cpu_us")]
        row["e2e_cpu_us"] = ({k: rnd(median([c[k] for c in cpu]), 0) for k in CPU_PARTS}
                             if cpu else None)
        summary[system] = row
    api = api_peak_rss(broker, api_posts) if "floodgate" in names and api_posts else {}
    if api.get("peak_rss_kb"):
        api["peak_rss_mb"] = rnd(api["peak_rss_kb"] / 1024, 1)
    return {"broker": broker, "n": n, "rounds": rounds, "median": summary,
            "runs": per, "api": api}


def section(r: dict) -> str:
    """This broker's (peers) section of RESULTS.md (bench/run_all.py appends it from
    bench/results/items/peers_<broker>.json, after the generated report)."""
    broker = r["broker"]
    head = ["system", "enqueue/s", "drain/s", "drain incl. start/s", "end to end/s",
            "worker peak RSS MB", "child peak RSS MB", "rounds ok"]
    rows = [[name, v["enqueue_rate"], v["drain_rate"], v["drain_with_start_rate"],
             v["e2e_rate"], v["peak_rss_mb"], v["child_peak_rss_mb"], v["rounds_ok"]]
            for name, v in r["median"].items()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    cpu_rows = [[name, *(round(v["e2e_cpu_us"][k]) for k in CPU_PARTS),
                 round(sum(v["e2e_cpu_us"].values()))]
                for name, v in r["median"].items() if v.get("e2e_cpu_us")]
    if cpu_rows:
        head = ["system", *(f"{k} µs" for k in CPU_PARTS), "total µs"]
        lines += ["", ("End to end, CPU per task by process (medians; publisher: the "
                       "driver's CPU while it submits; worker: with its children; Redis also "
                       "holds the counter on RabbitMQ). Two cores share this work, so the "
                       "total sets the rate."),
                  "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in cpu_rows]
    api = r.get("api") or {}
    api_txt = (f"Floodgate's API process ({api.get('command', 'uvicorn api.main:app')}): peak RSS {api['peak_rss_mb']} MB "
               f"after {api['posts']} POST /posts (status codes {api['status_codes']})."
               if api.get("peak_rss_mb") else f"API: {api.get('error', 'not measured')}.")
    quick = (" **Smoke run (small N, one round): it shows the harness works, not a result.**"
             if r.get("quick") else "")
    method = __doc__.split("\n\n", 2)[2].strip()
    return (f"## (peers) on {broker}: Floodgate, plain Celery, Dramatiq, RQ; one INCR per task\n\n"
            f"{method}\n\nN = {r['n']}, medians of {r['rounds']} alternating rounds.{quick}\n\n"
            + "\n".join(lines) + f"\n\n{api_txt} Worker peak RSS is the main process's "
            "VmHWM; child: the largest child (prefork's pool, Dramatiq's worker process, "
            "RQ's work horse).\n\nRerun: `.venv/bin/python -m bench.run_all --only peers "
            f"--broker {broker}` (`--peers-n`, `--peers-rounds`, `--peers-systems`; "
            "`--quick`: N = 1000, one round).")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.experiments.exp_peers")
    p.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    p.add_argument("--n", type=int, default=N)
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--systems", default="", help="comma-separated, default all")
    p.add_argument("--api-posts", type=int, default=API_POSTS)
    p.add_argument("--save", action="store_true",
                   help="write bench/results/items/peers_<broker>.json (run_all's place)")
    args = p.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()] or None
    if args.broker == "amqp":
        _env_mod.ensure_vhost()
    t = time.time()
    result = run(args.broker, args.n, args.rounds, systems, api_posts=args.api_posts)
    result.update(wall_s=round(time.time() - t, 1), quick=args.n < N or args.rounds < ROUNDS)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.save:
        (RESULTS / "items").mkdir(parents=True, exist_ok=True)
        (RESULTS / "items" / f"peers_{args.broker}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
