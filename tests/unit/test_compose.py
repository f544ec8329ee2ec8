"""docker-compose.yml keeps its promises: valid, secrets required, one beat, Flower,
Prometheus and Grafana on loopback, several API processes whose counters add up."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"RABBITMQ_USER": "floodgate", "RABBITMQ_PASSWORD": "s3cret",
           "POSTGRES_PASSWORD": "s3cret", "FLOWER_BASIC_AUTH": "admin:s3cret",
           "GRAFANA_ADMIN_PASSWORD": "s3cret"}
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
    assert {"rabbitmq", "redis", "postgres", "api", "worker", "beat", "flower",
            "prometheus", "grafana"} <= set(services)
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1
    for name in ("flower", "prometheus", "grafana"):
        ports = services[name]["ports"]
        assert ports and all(str(p).startswith("127.0.0.1:") for p in ports), (name, ports)
    assert "guest" not in services["api"]["environment"]["BROKER_URL"]
    assert all("healthcheck" in services[s] for s in ("rabbitmq", "redis", "postgres", "api", "worker"))


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing):
    done = config({k: v for k, v in SECRETS.items() if k != missing})
    assert done.returncode != 0 and f"set {missing}" in done.stderr


def test_api_runs_several_processes_whose_counters_add_up():
    done = config({**SECRETS, "API_WORKERS": "3"})
    assert done.returncode == 0, done.stderr
    api = yaml.safe_load(done.stdout)["services"]["api"]
    command = api["command"]
    assert command[command.index("--workers") + 1] == "3"
    directory = api["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert directory in api["tmpfs"]  # empty at every container start


def test_monitoring_reads_its_secrets_from_the_environment_and_ships_its_files():
    done = config(SECRETS)
    services = yaml.safe_load(done.stdout)["services"]
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"
    assert services["prometheus"]["environment"]["FLOWER_BASIC_AUTH"] == "admin:s3cret"
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = str(volume).split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), source
    # Flower's password never sits in the repository: Prometheus reads it from files.
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    flower = next(j for j in scrape["scrape_configs"] if j["job_name"] == "flower")
    assert set(flower["basic_auth"]) == {"username_file", "password_file"}
