"""Each queue is declared once (config/queues.py); everything else reads it or is checked here."""
from pathlib import Path

import pytest
import yaml

from config.queues import NAMES, PREFETCH, QUEUES, ROUTES, TIME_LIMITS_S, parse_queue_limits

ROOT = Path(__file__).resolve().parents[2]


def consumed_by(command: str) -> set[str]:
    words = command.split()
    return set(words[words.index("-Q") + 1].split(",")) if "-Q" in words else set()


def test_the_procfile_runs_a_worker_for_every_declared_queue():
    commands = [line.split(":", 1)[1] for line in (ROOT / "Procfile").read_text().splitlines()
                if line and not line.startswith("#") and " worker " in line]
    assert set().union(*map(consumed_by, commands)) == set(NAMES)


def test_compose_runs_a_worker_for_every_declared_queue():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    commands = [" ".join(s["command"]) for s in services.values()
                if isinstance(s.get("command"), list) and "worker" in s["command"]]
    assert set().union(*map(consumed_by, commands)) == set(NAMES)


def test_every_queue_has_a_limit_prefetch_and_routed_tasks_with_time_limits():
    assert set(parse_queue_limits("")) == set(NAMES) == set(PREFETCH)
    assert set(ROUTES.values()) <= set(NAMES) and set(TIME_LIMITS_S) == set(ROUTES)
    assert all(soft < hard for q in QUEUES for soft, hard in q.tasks.values())


def test_a_limit_for_an_undeclared_queue_names_where_queues_are_declared():
    with pytest.raises(ValueError, match="declare a queue in config/queues.py"):
        parse_queue_limits("emails=5")
