"""What fair admission costs a submission on Redis: ``send_task`` through the guard, first
come against fair (below the watermark, and above it with 50 tenants holding messages, so
every admission computes shares), in one process, alternating rounds, medians.

    python -m bench.experiments.exp_fair_cost [--n 2000] [--rounds 5] [--redis URL]

Uses Redis db 2 of the machine's Redis (or ``--redis``) and only keys of its own (the
queue ``faircost`` and the prefix ``faircost``), deleted after each round.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import redis
from celery import Celery

from celery_floodgate import Fairness, install, submitting_as

QUEUE, PREFIX = "faircost", "faircost"
TENANTS = 50
OUT = Path(__file__).resolve().parents[1] / "results" / "fair_cost.json"


def make_app(url: str, limit: int, fair: bool) -> Celery:
    app = Celery(f"faircost-{int(fair)}-{limit}", broker=url, set_as_current=False)
    app.conf.task_default_queue = QUEUE
    install(app, {QUEUE: limit}, meter_url=url, key_prefix=PREFIX,
            fairness=Fairness() if fair else None)
    return app


def clean(client: redis.Redis) -> None:
    keys = [k for k in client.scan_iter(match=f"{PREFIX}:*")] + [QUEUE]
    client.delete(*keys)


def timed(app: Celery, n: int, tenants: int) -> dict[str, float]:
    """µs of wall and process CPU per admitted send_task, tenants taking turns."""
    names = [f"t{i}" for i in range(tenants)]
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        with submitting_as(names[i % tenants]):
            app.send_task("faircost.job")
    return {"wall_us": (time.perf_counter() - wall) / n * 1e6,
            "cpu_us": (time.process_time() - cpu) / n * 1e6}


def prefill(app: Celery, n: int, tenants: int) -> None:
    for i in range(n):
        with submitting_as(f"t{i % tenants}"):
            app.send_task("faircost.job")


def run(url: str, n: int, rounds: int) -> dict:
    client = redis.Redis.from_url(url)
    # Above the watermark: 50 tenants hold half of the limit; each stays under its share.
    limit_high = 4 * n * 2 + TENANTS
    configs = {
        "first come": lambda: (make_app(url, 1_000_000, False), 0),
        "fair, below the watermark": lambda: (make_app(url, 1_000_000, True), 0),
        "fair, above it (50 tenants)": lambda: (make_app(url, limit_high, True), limit_high // 2),
    }
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, build in configs.items():
            clean(client)
            app, fill = build()
            prefill(app, fill, TENANTS)
            timed(app, 200, TENANTS)  # warm: scripts loaded, connections made
            figures[name].append(timed(app, n, TENANTS))
            assert client.llen(QUEUE) == fill + 200 + n, "a submission was refused"
            app.close()
    clean(client)
    return {name: {k: statistics.median(r[k] for r in runs) for k in ("wall_us", "cpu_us")}
            for name, runs in figures.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.experiments.exp_fair_cost",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/2")
    a = p.parse_args(argv)
    result = {"n": a.n, "rounds": a.rounds, "medians": run(a.redis, a.n, a.rounds)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    base = result["medians"]["first come"]["wall_us"]
    for name, m in result["medians"].items():
        print(f"{name:32} {m['wall_us']:7.1f} µs wall  {m['cpu_us']:7.1f} µs CPU  "
              f"{m['wall_us'] / base:4.2f}×")


if __name__ == "__main__":
    main()
