"""FAULTS row 19, first half: Flower as configured refuses to start open."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_flower_will_not_start_without_credentials():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    env.update(BROKER_URL="memory://", DATABASE_URL="sqlite:///:memory:")
    celery = Path(sys.executable).with_name("celery")
    done = subprocess.run([str(celery), "-A", "config", "flower"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "FLOWER_BASIC_AUTH is required to run Flower" in done.stdout + done.stderr
