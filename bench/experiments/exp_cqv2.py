"""(cqv2) What one confirmed publish costs on a classic queue of version 1 and of version 2.

    python -m bench.experiments.exp_cqv2 [--n 500] [--rounds 7]

Bare py-amqp, no Celery: a persistent message of Celery's size (20 headers, 300 bytes of
body) to a durable queue bounded as install() bounds it, waiting for each confirm. Rounds
alternate the versions; prints the median µs per publish of each. It runs in the bench
vhost (bench/harness/env.py) and deletes the two queues it declares.
"""
from __future__ import annotations

import argparse
import statistics
import time

import amqp

from bench.harness.env import VHOST, ensure_vhost

ARGUMENTS = {"x-max-length": 1_000_000, "x-overflow": "reject-publish"}
QUEUES = {1: "bench_cqv1", 2: "bench_cqv2"}


def run(n: int, rounds: int) -> dict[int, float]:
    ensure_vhost()
    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest",
                           virtual_host=VHOST, confirm_publish=True)
    conn.connect()
    channel = conn.channel()
    headers = {f"h{i}": "v" * 20 for i in range(20)}
    try:
        for version, queue in QUEUES.items():
            channel.queue_declare(queue, durable=True, auto_delete=False,
                                  arguments={**ARGUMENTS, "x-queue-version": version})
        per: dict[int, list[float]] = {v: [] for v in QUEUES}
        for r in range(rounds):
            for version in (1, 2) if r % 2 else (2, 1):
                start = time.perf_counter()
                for _ in range(n):
                    channel.basic_publish(amqp.Message(b"x" * 300, delivery_mode=2,
                                                       application_headers=headers),
                                          exchange="", routing_key=QUEUES[version])
                per[version].append(1e6 * (time.perf_counter() - start) / n)
        return {v: statistics.median(xs) for v, xs in per.items()}
    finally:
        for queue in QUEUES.values():
            channel.queue_delete(queue)
        conn.close()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.experiments.exp_cqv2")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    medians = run(args.n, args.rounds)
    print(f"confirmed publish, median of {args.rounds} rounds of {args.n}: "
          f"version 1 {medians[1]:.0f} us, version 2 {medians[2]:.0f} us "
          f"({medians[2] / medians[1]:.2f}x)")


if __name__ == "__main__":
    main()
