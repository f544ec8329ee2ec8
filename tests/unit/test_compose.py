"""docker-compose.yml keeps its promises: valid, secrets required, one beat, Flower on loopback."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"RABBITMQ_USER": "floodgate", "RABBITMQ_PASSWORD": "s3cret",
           "POSTGRES_PASSWORD": "s3cret", "FLOWER_BASIC_AUTH": "admin:s3cret"}
compose = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(
    compose is None and not os.environ.get("CI"), reason="Debian's docker-compose is not installed"
)


def config(env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([compose or "docker-compose", "config"], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_compose_is_valid_and_keeps_its_promises():
    done = config(SECRETS)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert {"rabbitmq", "redis", "postgres", "api", "worker", "beat", "flower"} <= set(services)
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1
    assert services["flower"]["ports"] and all(str(p).startswith("127.0.0.1:") for p in services["flower"]["ports"])
    assert "guest" not in services["api"]["environment"]["BROKER_URL"]
    assert all("healthcheck" in services[s] for s in ("rabbitmq", "redis", "postgres", "api", "worker"))


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing):
    done = config({k: v for k, v in SECRETS.items() if k != missing})
    assert done.returncode != 0 and f"set {missing}" in done.stderr
