"""Publisher CPU per ``.delay()`` through the guard: this checkout against a commit.

    python -m bench.experiments.exp_publish_ab --ref 9945eef [--broker redis|amqp]
        [--rounds 5] [-n 3000] [--redis redis://127.0.0.1:6379/3]

A plain Celery app installs the guard (limit 1,000,000, no consumer) and times n
``.delay()`` calls after 300 warm-up ones: CPU (``process_time``) and wall time per
call. The library comes from this checkout (``celery_floodgate``) or from the commit
``--ref``, checked out with ``git worktree`` (``tasks.backpressure`` before the split);
each run is a process of its own and the two alternate round by round. Prints each run,
then the medians and their ratio. On RabbitMQ it uses a vhost of its own, removed after.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import uuid

from bench.harness.env import ROOT

RUN = """
import sys, time
from celery import Celery
try:  # a commit before the library's split
    from tasks.backpressure import install
except ImportError:
    from celery_floodgate import install
broker, meter, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = Celery("pubab", broker=broker, set_as_current=False)
app.conf.task_routes = {"pubab.noop": {"queue": "pubab"}}
install(app, limits={"pubab": 1_000_000, "celery": 10}, meter_url=meter)
@app.task(name="pubab.noop")
def noop(x):
    return x
for _ in range(300):
    noop.delay(1)
c0, w0 = time.process_time(), time.perf_counter()
for i in range(n):
    noop.delay(i)
c1, w1 = time.process_time(), time.perf_counter()
print(1e6 * (c1 - c0) / n, 1e6 * (w1 - w0) / n)
app.close()
"""


def run_once(path: str | None, broker: str, meter: str, n: int) -> tuple[float, float]:
    paths = [f"{path}/lib/src", path] if path else []  # the commit's library, then its app
    code = f"import sys; sys.path[:0] = {paths!r}\n" + RUN
    out = subprocess.run([sys.executable, "-c", code, broker, meter, str(n)],
                         capture_output=True, text=True, cwd=tempfile.gettempdir())
    if out.returncode:
        raise SystemExit(f"the run of {path or 'HEAD'} failed:\n{out.stderr}")
    cpu, wall = out.stdout.split()
    return float(cpu), float(wall)


def purge(broker: str, meter: str) -> None:
    from kombu import Connection
    import redis

    redis.Redis.from_url(meter).delete("pubab")
    if broker.startswith("amqp"):
        with Connection(broker) as conn:
            channel = conn.channel()
            try:
                channel.queue_purge("pubab")
            except Exception:  # noqa: BLE001 - not declared yet
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True)
    parser.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/3")
    args = parser.parse_args()
    vhost = f"pubab_{uuid.uuid4().hex[:8]}"
    broker = args.redis if args.broker == "redis" else f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    worktree = tempfile.mkdtemp(prefix="pubab-")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", worktree, args.ref],
                   check=True, capture_output=True)
    if args.broker == "amqp":
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest",
                        ".*", ".*", ".*"], check=True)
    runs: dict[str, list[tuple[float, float]]] = {args.ref: [], "HEAD": []}
    try:
        for r in range(args.rounds):
            order = [(args.ref, worktree), ("HEAD", None)]
            for name, path in order if r % 2 == 0 else order[::-1]:
                purge(broker, args.redis)
                runs[name].append(run_once(path, broker, args.redis, args.n))
                print(f"round {r + 1} {name}: cpu {runs[name][-1][0]:.0f} µs, "
                      f"wall {runs[name][-1][1]:.0f} µs per .delay()", flush=True)
    finally:
        purge(broker, args.redis)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", worktree],
                       capture_output=True)
        if args.broker == "amqp":
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
    med = {k: [statistics.median(x[i] for x in v) for i in (0, 1)] for k, v in runs.items()}
    for name, (cpu, wall) in med.items():
        print(f"median {name}: cpu {cpu:.0f} µs, wall {wall:.0f} µs per .delay()")
    print(f"HEAD / {args.ref}: cpu {med['HEAD'][0] / med[args.ref][0]:.2f}x, "
          f"wall {med['HEAD'][1] / med[args.ref][1]:.2f}x")


if __name__ == "__main__":
    main()
