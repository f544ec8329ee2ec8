"""The Floodgate API as the benchmarks start and call it: the environment it needs, the
command that starts it (and :class:`ApiProcess`, one such process), its database's
schema, and accounts with their API keys.

Each helper takes the root of the code being measured, so the same benchmark drives the
work tree and an earlier commit's code (``git archive``) whichever API that code has:
before issue 19 there were no API keys (the author came in the body) and the app made
its own tables; since, every route but ``POST /users`` and ``GET /healthz`` takes
``Authorization: Bearer <api_key>`` and the schema comes from ``python -m config.migrate``.
"""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

from bench.harness.env import OUT, ROOT
from bench.harness.http_load import bearer, fetch_many, get, post
from bench.harness.procs import free_port, stop_group, tree_cpu_s

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
#: A benchmark makes hundreds of accounts and follows from one address in seconds.
GENEROUS_RATE = "1000000/minute"
#: What a process's command line holds when it is the API (either way it is started).
API_NEEDLES = ("api.serve", "api.main:app")
#: Secrets and URLs that must come from the benchmark, never from whoever runs it.
SECRET_VARS = ("API_KEY_SECRET", "OPS_TOKEN", "MIGRATION_DATABASE_URL",
               *(f"{name}_FILE" for name in (
                   "BROKER_URL", "RESULT_BACKEND", "DATABASE_URL", "MIGRATION_DATABASE_URL",
                   "METER_URL", "FLOWER_BASIC_AUTH", "API_KEY_SECRET", "OPS_TOKEN")))


def has_auth(code: Path = ROOT) -> bool:
    return (code / "api" / "auth.py").exists()


def has_migrations(code: Path = ROOT) -> bool:
    return (code / "config" / "migrate.py").exists()


def api_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` without inherited secrets, plus this run's own (random) API secrets and
    limits a benchmark's sign-ups do not hit; its load generator, one address, stands for
    many clients, so no cap of connections per address. Code before API keys ignores them."""
    out = {k: v for k, v in env.items() if k not in SECRET_VARS}
    out.update(API_KEY_SECRET=secrets.token_urlsafe(32), OPS_TOKEN=secrets.token_urlsafe(32),
               RATE_LIMIT_SIGNUPS=GENEROUS_RATE, RATE_LIMIT_FOLLOWS=GENEROUS_RATE,
               RATE_LIMIT_FOLLOWS_PER_ADDRESS=GENEROUS_RATE, API_MAX_CONNECTIONS_PER_CLIENT="0")
    return out


def api_command(port: int, code: Path = ROOT, plain: bool = False) -> list[str]:
    """``python -m api.serve`` where the code has it (its uvicorn limits included), else
    (or ``plain``) uvicorn as the Procfile ran it before."""
    if (code / "api" / "serve.py").exists() and not plain:
        return [PY, "-m", "api.serve", "--host", "127.0.0.1", "--port", str(port)]
    return [str(Path(PY).with_name("uvicorn")), "api.main:app", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log"]


def export(ref: str, into: Path) -> Path:
    """``ref``'s code (``git archive``), read-only in ``into``: the work tree is shared."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


class ApiProcess:
    """One API process of ``code`` on a free port, in a session of its own, its output
    in bench/out/``name``.log."""

    def __init__(self, name: str, env: dict, code: Path = ROOT, plain: bool = False) -> None:
        self.port = free_port()
        self.code = code
        self.argv = api_command(self.port, code, plain)
        OUT.mkdir(parents=True, exist_ok=True)
        self.log_path = OUT / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=code, env={**env, "PYTHONPATH": str(code)},
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait(self, timeout_s: float = 60) -> None:
        """Until GET /healthz answers 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API exited (rc {self.proc.returncode}); "
                                   f"see {self.log_path}")
            try:
                (status, _), = fetch_many("127.0.0.1", self.port, [get("/healthz")], 1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"/healthz not 200 within {timeout_s} s; see {self.log_path}")

    def cpu_s(self) -> float:
        """CPU seconds of the API process and any it started (``--workers``)."""
        return tree_cpu_s(self.proc.pid)

    def stop(self) -> None:
        stop_group(self.proc)
        self.log.close()


def is_api(cmd: str) -> bool:
    return any(needle in cmd for needle in API_NEEDLES) and not cmd.startswith("/bin/sh")


def migrate(database_url: str, env: dict[str, str], code: Path = ROOT) -> str:
    """Bring a fresh database to the code's schema; returns what was done, in words.
    Code before migrations made its tables itself (``engine()``), so there is nothing to do."""
    if not has_migrations(code):
        return "none: this code makes its tables itself"
    run_env = {**{k: v for k, v in env.items() if k not in SECRET_VARS},
               "DATABASE_URL": database_url, "PYTHONPATH": str(code)}
    run_env.setdefault("BROKER_URL", "memory://")
    proc = subprocess.run([PY, "-m", "config.migrate"], cwd=code, env=run_env,
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"python -m config.migrate failed (rc {proc.returncode}): "
                           f"{(proc.stdout + proc.stderr)[-1500:]}")
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "migrated"


def sign_up(port: int, names: list[str], conns: int = 16) -> dict[str, str | None]:
    """Create these accounts over HTTP; name -> API key (None from code before keys)."""
    answers = fetch_many("127.0.0.1", port, [post("/users", {"name": n}) for n in names], conns)
    bad = sorted({s for s, _ in answers if s != 201})
    if bad:
        raise RuntimeError(f"POST /users answered {bad} (expected 201 for fresh names)")
    return {n: json.loads(body).get("api_key") for n, (_, body) in zip(names, answers)}


def follow_all(port: int, keys: dict[str, str | None], followees: list[str],
               conns: int = 16) -> None:
    """Every account in ``keys`` follows every one of ``followees``, as itself."""
    reqs = []
    for follower, key in keys.items():
        for followee in followees:
            body = {"followee": followee} if key else {"follower": follower, "followee": followee}
            reqs.append(post("/follows", body, headers=bearer(key)))
    bad = [s for s, _ in fetch_many("127.0.0.1", port, reqs, conns) if s != 201]
    if bad:
        raise RuntimeError(f"POST /follows answered {sorted(set(bad))} ({len(bad)} times)")


def post_request(author: str, key: str | None, text: str) -> str:
    """POST /posts as ``author``: with its key, or (before keys) naming it in the body."""
    body = {"text": text} if key else {"author": author, "text": text}
    return post("/posts", body, headers=bearer(key))
