"""Run Floodgate's parts as real subprocesses and stop them by PID."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


class Part:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the part's whole process group (a prefork worker has children)."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout_s: float = 15) -> None:
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")


def api(env, log_dir, port: int, workers: int = 1) -> Part:
    """``python -m api.serve`` as the Procfile runs it, with uvicorn's access log."""
    return Part("api", [sys.executable, "-m", "api.serve", "--host", "127.0.0.1",
                        "--port", str(port), "--workers", str(workers), "--access-log"],
                env, log_dir)


def worker(env, log_dir, name="worker", queues="fanout,aggregation,default",
           pool: str | None = None, concurrency=2, extra=()) -> Part:
    """A worker subprocess; ``pool=None`` runs Floodgate's default pool (tasks.pool).

    Without mingle: at start it asks the other workers for revoked ids and waits a
    second for replies; no test relies on it, and tests start many workers."""
    options = ["-P", pool, "-c", str(concurrency)] if pool else []
    if "--without-mingle" not in extra:
        options.append("--without-mingle")
    return Part(name, [str(BIN / "celery"), "-A", "config", "worker", "-Q", queues,
                       *options, "-n", f"{name}@%h", "--loglevel=INFO", *extra], env, log_dir)


def beat(env, log_dir, schedule: Path) -> Part:
    return Part("beat", [str(BIN / "celery"), "-A", "config", "beat", "--loglevel=INFO",
                         "-s", str(schedule)], env, log_dir)


def flower(env, log_dir) -> Part:
    return Part("flower", [str(BIN / "celery"), "-A", "config", "flower"], env, log_dir)


@contextlib.contextmanager
def serving_api(env, log_dir):
    """An API process on a free port, answering /healthz; yields (port, part), stops it."""
    from tests import support

    port = support.free_port()
    part = api(env, log_dir, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield port, part
    finally:
        part.stop()


def wait_http(url: str, timeout_s: float = 30, **kwargs) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=2, **kwargs)
            if last.status_code < 500:
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout_s} s (last: {last})")
