"""Subprocesses the benchmarks start: Celery workers and phase drivers, stopped by their PID;
and what /proc says about a process and those below it (CPU seconds, command line)."""
from __future__ import annotations

import json
import os
import signal
import socket
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
        stop_group(self.proc, timeout_s)
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


def stop_group(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session``), and
    SIGKILL it if it has not exited within ``timeout_s``."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout_s)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """PIDs below ``pid`` (honcho starts each part in a session of its own)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (raises OSError once it is gone)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and of every process below it still alive (``--workers``)."""
    total = 0.0
    for each in [pid, *descendants(pid)]:
        try:
            total += cpu_s(each)
        except OSError:
            pass
    return total
