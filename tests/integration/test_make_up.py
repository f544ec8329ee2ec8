"""``make up`` as a developer runs it: ``python -m config.up`` on a machine with no
services, so with its embedded PostgreSQL and Valkey; Flower lists a job posted
right after start; no password shows in a printed URL, Valkey wants its password, the
parts connect as the app's own role; Ctrl-C leaves nothing running."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import httpx
import psutil
import psycopg
import pytest

from config.settings import Settings
from tests import processes, support

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(support.broker_kind() == "amqp",
                       reason="make up embeds its own broker and database, whatever the pass: "
                              "it runs once, in the Redis pass"),
    pytest.mark.timeout(300),
]
FLOWER_AUTH = ("admin", "make-up-flower-pass")
STOP_TIMEOUT_S = 20


def _fresh_machine_env(var, api_port: int, flower_port: int) -> dict[str, str]:
    """No Floodgate setting from this test session (the conftest sets a broker and a
    database): make up must embed both."""
    ours = {name.upper() for name in Settings.model_fields} | {"APP_DB_ROLE"}
    ours |= {f"{name}_FILE" for name in ours}
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("FLOWER_")}
    return {
        **env,
        "PATH": f"{processes.BIN}{os.pathsep}{env.get('PATH', '')}",  # as the Makefile does
        "PYTHONUNBUFFERED": "1",
        "FLOODGATE_VAR_DIR": str(var),  # never the repo's ./var, which a developer may use
        "API_PORT": str(api_port),
        "FLOWER_PORT": str(flower_port),
        "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH),
        # Flower never switches events on, so a task it lists proves the workers sent
        # events on their own from the start (WORKER_SEND_TASK_EVENTS, set by make up).
        "FLOWER_ENABLE_EVENTS": "false",
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("make-up")
    var = tmp / "var"
    api_port, flower_port = support.free_port(), support.free_port()
    log = open(tmp / "make-up.log", "wb")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "config.up"], cwd=processes.ROOT,
                            env=_fresh_machine_env(var, api_port, flower_port),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack = {"proc": proc, "var": var, "log": tmp / "make-up.log",
             "api": f"http://127.0.0.1:{api_port}", "flower": f"http://127.0.0.1:{flower_port}"}
    try:
        health = processes.wait_http(f"{stack['api']}/healthz", timeout_s=90)
        print(f"\nmake up: /healthz answered {health.status_code} after "
              f"{time.monotonic() - started:.1f} s")
        yield stack
    finally:
        _stop_everything(proc, var)
        log.close()


def _output(stack) -> str:
    return stack["log"].read_text(errors="replace")


def _processes_using(var) -> list[psutil.Process]:
    """Live processes working in the var dir: PostgreSQL (every one of its processes
    runs in its data directory) and Valkey (--dir); or naming it on their command line."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cwd, cmdline = p.info["cwd"] or "", " ".join(p.info["cmdline"] or ())
        if cwd.startswith(str(var)) or str(var) in cmdline:
            found.append(p)
    return found


def _stop_everything(proc: subprocess.Popen, var) -> None:
    """Leave nothing behind even when a test failed: TERM make up, then KILL what is left."""
    if proc.poll() is None:
        left = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for p in left + _processes_using(var):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def _printed(stack, label: str) -> str:
    """A secret make up printed on a line of its own: ``  Valkey   password <it>``."""
    found = re.search(rf"^  {label} +(\S+)", _output(stack), re.MULTILINE)
    assert found, _output(stack)
    return found[1]


def _ops(stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {_printed(stack, 'ops +token')}"}


def test_make_up_runs_every_part_on_embedded_postgresql_and_valkey(stack):
    health = httpx.get(f"{stack['api']}/healthz/details", headers=_ops(stack), timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["checks"] == {"broker": "ok", "result_backend": "ok", "database": "ok"}
    out = _output(stack)
    database = re.search(r"database +(\S+)(.*)", out)
    assert database, out
    assert re.fullmatch(r"postgresql\+psycopg://floodgate_app:\*+@127\.0\.0\.1:\d+/floodgate",
                        database[1])
    assert "embedded PostgreSQL" in database[2] and str(stack["var"]) in database[2]
    assert re.search(r"broker +redis://:\*+@127\.0\.0\.1:\d+/0 \(embedded Valkey\)", out)
    assert re.search(r"^Migrations: postgresql\+psycopg://floodgate:\*+@\S+ upgraded from an "
                     r"empty schema to \w+ \(head\); role floodgate_app may read and write rows",
                     out, re.MULTILINE), out
    assert (stack["var"] / "pg" / "PG_VERSION").exists()
    for kept in ("pg.password", "pg-app.password", "valkey.password", "api-key-secret",
                 "ops-token"):
        assert (stack["var"] / kept).stat().st_mode & 0o777 == 0o600, kept


# scheme://user:password@ : the password part is only ever printed masked.
URL_WITH_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:/@]*:([^\s@/]*)@", re.IGNORECASE)


def test_no_printed_url_holds_a_password_and_no_database_password_is_printed(stack):
    out = _output(stack)
    passwords = [m[1] for m in URL_WITH_USERINFO.finditer(out)]
    assert passwords, out  # the broker, results, database and migration URLs at least
    assert all(re.fullmatch(r"\*+", p) for p in passwords), passwords
    var = stack["var"]
    for never in ("pg.password", "pg-app.password", "api-key-secret"):
        assert (var / never).read_text().strip() not in out, never


def test_valkey_refuses_a_client_without_the_password_make_up_printed(stack):
    port = int(re.search(r"broker +redis://:\*+@127\.0\.0\.1:(\d+)/", _output(stack))[1])
    assert _valkey(port, b"PING\r\n").startswith(b"-NOAUTH"), "Valkey answered without a password"
    password = _printed(stack, "Valkey +password").encode()
    assert _valkey(port, b"AUTH %s\r\nPING\r\n" % password) == b"+OK\r\n+PONG\r\n"


def _valkey(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(command)
        time.sleep(0.2)
        return sock.recv(4096)


def test_the_parts_connect_as_the_app_role_which_cannot_change_the_schema(stack):
    var = stack["var"]
    port = re.search(r"database +\S+@127\.0\.0\.1:(\d+)/", _output(stack))[1]
    with httpx.Client(base_url=stack["api"], timeout=10) as http:  # the API uses the database
        assert http.post("/users", json={"name": f"role-{uuid.uuid4().hex[:6]}"}).status_code == 201
    owner = f"postgresql://floodgate:{(var / 'pg.password').read_text().strip()}@127.0.0.1:{port}"
    with psycopg.connect(f"{owner}/floodgate") as conn:
        users = {r[0] for r in conn.execute(
            "SELECT usename FROM pg_stat_activity WHERE datname = 'floodgate' "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")}
    assert users == {"floodgate_app"}, users
    app = f"postgresql://floodgate_app:{(var / 'pg-app.password').read_text().strip()}" \
          f"@127.0.0.1:{port}/floodgate"
    with psycopg.connect(app) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("CREATE TABLE intruder (id integer)")
    owner_password = (var / "pg.password").read_text().strip()
    for part in psutil.Process(stack["proc"].pid).children(recursive=True):
        if _name(part) in ("honcho", "celery", "api"):
            assert owner_password not in "".join(part.environ().values()), part.cmdline()


def test_metrics_need_the_ops_token_make_up_printed(stack):
    assert httpx.get(f"{stack['api']}/metrics", timeout=10).status_code == 401
    answer = httpx.get(f"{stack['api']}/metrics", headers=_ops(stack), timeout=10)
    assert answer.status_code == 200 and "floodgate_queue_limit" in answer.text


def test_flower_lists_a_job_posted_right_after_start(stack):
    flower, auth = stack["flower"], FLOWER_AUTH
    # Flower hears worker heartbeats (sent whatever the setting): its receiver is bound.
    deadline = time.monotonic() + 30
    while not any(name.startswith("worker@") and alive for name, alive in
                  _get_json(f"{flower}/api/workers?status=true", auth).items()):
        assert time.monotonic() < deadline, "Flower never heard from the worker"
        time.sleep(0.3)

    with httpx.Client(base_url=stack["api"], timeout=10) as http:
        tag = uuid.uuid4().hex[:6]
        author, fan = (_signup(http, f"{who}-{tag}") for who in ("author", "fan"))
        assert http.post("/follows", json={"followee": f"author-{tag}"},
                         headers=fan).status_code == 201
        accepted = http.post("/posts", json={"text": "first #up"}, headers=author)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]

        deadline = time.monotonic() + 60
        while (job := http.get(f"/jobs/{job_id}", headers=author).json())["state"] != "succeeded":
            assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.3)
        timeline = http.get(f"/timelines/fan-{tag}", headers=fan).json()["posts"]
        assert [p["post_id"] for p in timeline] == [accepted.json()["post_id"]]

    deadline = time.monotonic() + 10  # events travel on their own; give them a moment
    while _get_json(f"{flower}/api/tasks", auth).get(job_id, {}).get("state") != "SUCCESS":
        assert time.monotonic() < deadline, f"Flower never listed the job's task {job_id}"
        time.sleep(0.3)


def _signup(http: httpx.Client, name: str) -> dict[str, str]:
    """A new account; the headers that act as it."""
    created = http.post("/users", json={"name": name})
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['api_key']}"}


def test_ctrl_c_stops_every_part_and_leaves_no_process(stack):
    proc, var = stack["proc"], stack["var"]
    parts = psutil.Process(proc.pid).children(recursive=True)
    servers = _processes_using(var)
    assert {"postgres", "honcho", "celery", "api"} <= {_name(p) for p in parts}, parts
    assert {"postgres", "valkey-server"} <= {p.name() for p in servers}, servers

    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    deadline = time.monotonic() + STOP_TIMEOUT_S
    proc.wait(STOP_TIMEOUT_S)
    _, alive = psutil.wait_procs(parts, timeout=max(0.1, deadline - time.monotonic()))
    print(f"\nmake up: stopped {len(parts)} processes in "
          f"{STOP_TIMEOUT_S - (deadline - time.monotonic()):.1f} s")
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nothing left in make up's process group
    assert _processes_using(var) == []
    assert "database system is shut down" in (var / "pg.log").read_text()
    assert any(f.name.startswith("celerybeat-schedule") for f in var.iterdir())


def _name(p: psutil.Process) -> str:
    try:
        cmdline = " ".join(p.cmdline())
    except psutil.NoSuchProcess:
        return "?"
    if "api.serve" in cmdline or "uvicorn" in cmdline:
        return "api"
    for name in ("postgres", "honcho", "celery"):
        if name in cmdline:
            return name
    return p.name()


def _get_json(url: str, auth) -> dict:
    response = httpx.get(url, auth=auth, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()
