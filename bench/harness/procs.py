"""Subprocesses the benchmarks start: Celery workers and phase drivers, stopped by their PID."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.harness.env import OUT, ROOT, phase_env

BIN = Path(sys.executable).parent


class Worker:
    """One ``celery worker`` in its own process group (a prefork worker has children)."""

    def __init__(self, env: dict, name: str, queue: str, app: str = "config",
                 pool: str | None = "threads", concurrency: int | None = 2,
                 extra: tuple[str, ...] = (), lean: bool = True) -> None:
        argv = [str(BIN / "celery"), "-A", app, "worker", "-Q", queue, "-n", f"{name}@%h",
                "--loglevel=WARNING"]
        if lean:  # skip start-up sync and the gossip consumer (not needed by one-queue benches)
            argv += ["--without-mingle", "--without-gossip"]
        if app == "config":
            argv += ["-I", "bench.harness.tasks"]
        if pool:
            argv += ["-P", pool]
        if concurrency:
            argv += ["-c", str(concurrency)]
        argv += list(extra)
        self.name = name
        self.log = open(OUT / f"worker-{name}.log", "ab")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout_s: float = 20) -> None:
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_phase(name: str, broker: str, queue_limits: str, params: dict | None = None,
              timeout_s: float = 600) -> dict:
    """Run ``bench.harness.phase <name>`` in a fresh interpreter (settings are read once per process)."""
    out = OUT / f"phase-{name}-{broker}-{os.getpid()}-{time.monotonic_ns()}.json"
    env = phase_env(broker, queue_limits)  # also creates OUT
    argv = [sys.executable, "-m", "bench.harness.phase", name, json.dumps(params or {}), str(out)]
    with open(OUT / f"phase-{name}-{broker}.log", "ab") as log:
        proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"phase {name} on {broker} failed (rc {proc.returncode}); "
                           f"see {OUT}/phase-{name}-{broker}.log")
    result = json.loads(out.read_text())
    out.unlink()
    return result
