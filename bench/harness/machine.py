"""A note on the machine and versions, for RESULTS.md."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import time
from importlib.metadata import version
from pathlib import Path


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _servers() -> str:
    try:
        import redis

        redis_v = redis.Redis(socket_timeout=2).info("server")["redis_version"]
    except Exception:  # noqa: BLE001
        redis_v = "?"
    try:
        out = subprocess.run(["rabbitmqctl", "-q", "version"], capture_output=True, text=True,
                             timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001
        out = "?"
    return f"Redis {redis_v}, RabbitMQ {out or '?'}"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__))).stdout.strip()


def _fingerprint() -> str:
    """A hash of the core files' contents (config/, tasks/), committed or not."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha1()
    for path in sorted([*root.glob("config/**/*.py"), *root.glob("tasks/**/*.py")]):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def _code() -> str:
    """The commit measured, any uncommitted core edits (others work here too), and a
    fingerprint of the core files' contents, to tell whether they changed mid-run."""
    dirty = [line[3:] for line in _git("status", "--porcelain").splitlines()
             if line[3:].startswith(("config/", "tasks/"))]
    edits = f" with uncommitted edits to {', '.join(dirty)}" if dirty else ""
    head = _git("rev-parse", "--short", "HEAD")
    return f"commit {head}{edits}; core fingerprint {_fingerprint()}"


def machine_meta(end: bool = False) -> dict:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    if end:
        return {"load_end": load, "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
                "code_end": _code()}
    libs = ", ".join(f"{p} {version(p)}" for p in ("celery", "kombu", "redis", "amqp"))
    return {"cpu": _cpu(), "cores": os.cpu_count(), "load_start": load, "code": _code(),
            "versions": f"Python {platform.python_version()}, {libs}, {_servers()}"}
