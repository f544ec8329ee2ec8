"""Where the benchmarks run: Redis db 10 and the RabbitMQ vhost ``floodgate_bench`` only."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
OUT = BENCH / "out"
PLOTS = BENCH / "plots"
RESULTS = BENCH / "results"

REDIS_URL = "redis://127.0.0.1:6379/10"
VHOST = "floodgate_bench"
AMQP_URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
BROKERS = ("redis", "amqp")

#: Floodgate variables we set ourselves; inherited values are dropped.
_OURS = ("BROKER_URL", "RESULT_BACKEND", "DATABASE_URL", "METER_URL", "QUEUE_LIMITS",
         "FLOWER_BASIC_AUTH", "BENCH_REDIS_URL", "BENCH_BROKER")


def broker_url(broker: str) -> str:
    return {"redis": REDIS_URL, "amqp": AMQP_URL}[broker]


def phase_env(broker: str, queue_limits: str) -> dict[str, str]:
    """Environment for a bench driver or worker on ``broker`` with these limits."""
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    OUT.mkdir(parents=True, exist_ok=True)
    env.update(
        BROKER_URL=broker_url(broker),
        RESULT_BACKEND=REDIS_URL,  # also the drain meter on RabbitMQ
        DATABASE_URL=f"sqlite:///{OUT}/bench.db",
        QUEUE_LIMITS=queue_limits,
        BENCH_REDIS_URL=REDIS_URL,
        BENCH_BROKER=broker,
        PYTHONPATH=str(ROOT),
    )
    return env


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl -q`` with these arguments; its output and exit code are ignored."""
    subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=60)


def ensure_vhost() -> None:
    """Create the bench vhost if missing (idempotent)."""
    rabbitmqctl("add_vhost", VHOST)
    rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
