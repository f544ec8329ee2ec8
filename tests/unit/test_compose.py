"""docker-compose.yml keeps its promises: every service hardened and pinned, secrets only
in files deploy/make-secrets.sh makes, least privilege on PostgreSQL, Redis and RabbitMQ,
migrations first, one beat, the operators' ports on loopback (docs/app/deploy.md)."""
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PINNED = re.compile(r"^[a-z0-9./_-]+:[A-Za-z0-9._-]+@sha256:[0-9a-f]{64}$")
SECRET_NAME = re.compile(r"(PASSWORD|PASS|SECRET|TOKEN|AUTH|_KEY|_URL|BACKEND)$")
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
APP_SERVICES = ("api", "worker", "worker-aggregation", "beat")
compose = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(
    compose is None and not os.environ.get("CI"), reason="Debian's docker-compose is not installed"
)


@pytest.fixture(scope="module")
def secrets(tmp_path_factory) -> Path:
    """A directory of throwaway secrets, made by the operator's script."""
    directory = tmp_path_factory.mktemp("compose") / "secrets"
    made = subprocess.run([DEPLOY / "make-secrets.sh"], env={**os.environ, "SECRETS_DIR": str(directory)},
                          capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    return directory


def config(secrets: Path, **env: str) -> dict:
    done = subprocess.run([compose or "docker-compose", "config"], cwd=ROOT,
                          env={**os.environ, "SECRETS_DIR": str(secrets), **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def dockerfile_base() -> str:
    froms = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.startswith("FROM ")]
    assert len(froms) == 1, froms
    return froms[0]


@needs_compose
def test_compose_is_valid_and_keeps_its_promises(secrets):
    services = config(secrets)["services"]
    assert {"rabbitmq", "redis", "postgres", "migrate", "api", "worker", "beat", "flower",
            "prometheus", "grafana"} <= set(services)
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1
    assert all("healthcheck" in services[s] for s in ("rabbitmq", "redis", "postgres", "api", "worker"))


@needs_compose
def test_api_runs_several_processes_whose_counters_add_up(secrets):
    api = config(secrets, API_WORKERS="3")["services"]["api"]
    command = api["command"]
    assert command[:3] == ["python", "-m", "api.serve"]
    assert command[command.index("--workers") + 1] == "3"
    directory = api["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert directory in api["tmpfs"]  # empty at every container start


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_is_hardened(name):
    service = SERVICES[name]
    assert "no-new-privileges:true" in service.get("security_opt", []), name
    assert service.get("cap_drop") == ["ALL"], name
    assert not service.get("cap_add"), f"{name} adds capabilities back"
    assert re.fullmatch(r"\d+[kmg]", str(service.get("mem_limit", ""))), f"{name}: no mem_limit"
    assert int(service.get("pids_limit", 0)) > 0, f"{name}: no pids_limit"
    # Not root: a stated user, or the app image, whose Dockerfile ends as its own user.
    user = str(service.get("user", ""))
    if "build" in service:
        assert not user
        assert "USER floodgate" in (ROOT / "Dockerfile").read_text()
    else:
        assert user and not user.startswith("0:") and user != "0", f"{name} runs as root"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_image_is_pinned_by_digest(name):
    service = SERVICES[name]
    if "build" in service:  # the app image: its base is pinned
        assert service["image"] == "floodgate:latest"
        assert PINNED.match(dockerfile_base()), dockerfile_base()
    else:
        assert PINNED.match(service["image"]), service["image"]


def test_every_pinned_digest_says_where_it_came_from():
    recorded = (DEPLOY / "IMAGES.md").read_text()
    images = {s["image"] for s in SERVICES.values() if "build" not in s} | {dockerfile_base()}
    for image in images:
        name, digest = image.split("@")
        assert f"`{name}`" in recorded and digest in recorded, image


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_no_secret_sits_in_an_environment_value(name):
    service = SERVICES[name]
    mounted = set(service.get("secrets", []))
    for key, value in (service.get("environment") or {}).items():
        value = "" if value is None else str(value)
        if key.endswith("_FILE"):  # Floodgate's *_FILE, Postgres' and Grafana's __FILE
            assert value.startswith("/run/secrets/"), (name, key, value)
            assert value.removeprefix("/run/secrets/") in mounted, (name, key, "not mounted")
            continue
        assert "@" not in value, (name, key, "a URL with credentials")
        if SECRET_NAME.search(key):
            assert value == "memory://", (name, key, "a secret belongs in a *_FILE secret")


def test_secrets_are_the_files_make_secrets_writes(secrets):
    declared = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["secrets"]
    for name, source in declared.items():
        assert source == {"file": "${SECRETS_DIR:-./deploy/secrets}/" + name}, name
    assert set(declared) <= {p.name for p in secrets.iterdir()}
    used = {s for service in SERVICES.values() for s in service.get("secrets", [])}
    assert used == set(declared)
    # Private on the host (0700 directory), readable by the services' own users inside.
    assert secrets.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in secrets.iterdir())
    ignored = (DEPLOY / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignored
    assert "deploy" in (ROOT / ".dockerignore").read_text().split()


def test_make_secrets_keeps_values_and_rotates_one_group(secrets, tmp_path):
    copy = tmp_path / "secrets"
    shutil.copytree(secrets, copy)
    before = {p.name: p.read_text() for p in copy.iterdir()}
    env = {**os.environ, "SECRETS_DIR": str(copy)}
    subprocess.run([DEPLOY / "make-secrets.sh"], env=env, check=True, capture_output=True)
    assert {p.name: p.read_text() for p in copy.iterdir()} == before
    subprocess.run([DEPLOY / "make-secrets.sh", "--rotate", "redis"], env=env, check=True,
                   capture_output=True)
    after = {p.name: p.read_text() for p in copy.iterdir()}
    assert {n for n in before if before[n] != after[n]} == {"redis_password", "redis_url"}
    assert after["redis_password"] in after["redis_url"]
    values = [before[n] for n in before if n.endswith(("password", "secret", "token"))]
    assert len(values) == len(set(values)) == 10


def test_the_apps_connect_to_postgres_as_a_role_that_only_reads_and_writes_rows(secrets):
    app = urlsplit((secrets / "database_url").read_text())
    owner = urlsplit((secrets / "migration_database_url").read_text())
    assert (app.username, app.hostname, app.path) == ("floodgate_app", "postgres", "/floodgate")
    assert owner.username == "floodgate_owner" != app.username
    assert SERVICES["postgres"]["environment"]["POSTGRES_USER"] not in (app.username, owner.username)
    for name in APP_SERVICES + ("flower",):
        assert SERVICES[name]["environment"]["DATABASE_URL_FILE"] == "/run/secrets/database_url"
        assert "migration_database_url" not in SERVICES[name]["secrets"]
    init = (DEPLOY / "postgres/initdb/10-floodgate-roles.sh").read_text()
    assert re.search(r"CREATE ROLE floodgate_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE", init)
    assert re.search(r"CREATE ROLE floodgate_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE", init)
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in init
    assert "ALTER DATABASE floodgate OWNER TO floodgate_owner" in init
    assert "PASSWORD '" not in init  # read from the secret files, never written here


def test_migrations_run_first_as_the_owner_in_a_one_shot_service():
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["python", "-m", "config.migrate"]
    assert migrate["restart"] == "no"
    assert migrate["environment"]["MIGRATION_DATABASE_URL_FILE"] == "/run/secrets/migration_database_url"
    assert migrate["environment"]["APP_DB_ROLE"] == "floodgate_app"
    assert migrate["secrets"] == ["migration_database_url"]  # no broker, no app secrets
    for name in APP_SERVICES:
        assert SERVICES[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"}, name


def test_redis_refuses_clients_without_the_floodgate_users_password(secrets):
    redis = SERVICES["redis"]
    script = (DEPLOY / "redis/entrypoint.sh").read_text()
    assert redis["entrypoint"] == ["/bin/sh", "/usr/local/etc/floodgate/entrypoint.sh"]
    assert "redis_password" in redis["secrets"] and "requirepass" not in json.dumps(redis)
    assert "user default off" in script and "nopass" not in script
    # The healthcheck hands redis-cli the password in REDISCLI_AUTH, not on its command line.
    assert "REDISCLI_AUTH=" in " ".join(redis["healthcheck"]["test"])
    assert urlsplit((secrets / "redis_url").read_text()).username == "floodgate"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_the_redis_acl_file_works_on_a_real_server(tmp_path):
    """Runs deploy/redis/entrypoint.sh against a private redis-server on a free port."""
    (tmp_path / "redis_password").write_text("s3cret-for-the-test\n")
    script = ((DEPLOY / "redis/entrypoint.sh").read_text()
              .replace("/run/secrets/redis_password", str(tmp_path / "redis_password"))
              .replace("/run/redis/users.acl", str(tmp_path / "users.acl"))
              .replace("exec docker-entrypoint.sh", "exec"))
    (tmp_path / "entrypoint.sh").write_text(script)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["sh", str(tmp_path / "entrypoint.sh"), "redis-server", "--port",
                               str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        def client(**auth) -> redis.Redis:
            return redis.Redis(port=port, socket_timeout=2, retry=Retry(NoBackoff(), 0), **auth)

        for _ in range(100):  # until it listens
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        with pytest.raises(redis.AuthenticationError):
            client().ping()
        with pytest.raises(redis.AuthenticationError):
            client(username="floodgate", password="wrong").ping()
        user = client(username="floodgate", password="s3cret-for-the-test")
        assert user.ping() and user.set("k", 1) and user.eval("return 1", 0) == 1
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.config_get("maxmemory")
        assert "s3cret" not in (tmp_path / "users.acl").read_text()  # only its SHA-256
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_rabbitmq_gives_the_app_a_user_without_tags_on_its_own_vhost(secrets):
    rabbitmq = SERVICES["rabbitmq"]
    template = json.loads((DEPLOY / "rabbitmq/definitions.template.json").read_text())
    users = {u["name"]: u for u in template["users"]}
    assert "guest" not in users and users["floodgate"]["tags"] == []
    assert [p["vhost"] for p in template["permissions"] if p["user"] == "floodgate"] == ["floodgate"]
    broker = urlsplit((secrets / "broker_url").read_text())
    assert (broker.username, broker.path) == ("floodgate", "/floodgate")
    conf = (DEPLOY / "rabbitmq/floodgate.conf").read_text()
    assert "load_definitions = /run/rabbitmq-definitions/definitions.json" in conf
    assert "/run/rabbitmq-definitions" in rabbitmq["tmpfs"]
    assert "RABBITMQ_DEFAULT_USER" not in json.dumps(rabbitmq)
    assert all(str(p).startswith("127.0.0.1:") for p in rabbitmq.get("ports", []))


def test_operator_ports_are_on_loopback_and_beat_runs_once():
    for name in ("flower", "prometheus", "grafana", "rabbitmq"):
        ports = SERVICES[name]["ports"]
        assert ports and all(str(p).startswith("127.0.0.1:") for p in ports), (name, ports)
    assert SERVICES["beat"].get("deploy", {}).get("replicas", 1) == 1
    assert SERVICES["api"]["command"][:3] == ["python", "-m", "api.serve"]


def test_monitoring_reads_its_secrets_from_files_and_ships_its_files():
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    assert jobs["floodgate-api"]["authorization"] == {
        "type": "Bearer", "credentials_file": "/run/secrets/ops_token"}
    assert set(jobs["flower"]["basic_auth"]) == {"username_file", "password_file"}
    assert {"ops_token", "flower_basic_auth"} <= set(SERVICES["prometheus"]["secrets"])
    assert SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == (
        "/run/secrets/grafana_admin_password")
    for name in ("prometheus", "grafana", "rabbitmq", "redis", "postgres"):
        for volume in SERVICES[name]["volumes"]:
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
