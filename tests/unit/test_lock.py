"""The Python dependencies are locked with hashes: requirements/app.lock is what the image
installs, requirements/test.lock what CI installs (`make lock`, docs/app/deploy.md)."""
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCAL = {"celery-floodgate", "floodgate-app"}  # installed from this repository, --no-deps
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")


def entries(lock: str) -> list[str]:
    """Each requirement of a lock file, its continuation lines joined, comments dropped."""
    text = (ROOT / "requirements" / lock).read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def pins(lock: str) -> dict[str, str]:
    return {canonicalize_name(m["name"]): m["version"] for m in map(PIN.match, entries(lock))}


def project(path: str = "pyproject.toml") -> dict:
    return tomllib.loads((ROOT / path).read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


@pytest.mark.parametrize("lock", ["app.lock", "test.lock"])
def test_every_requirement_is_pinned_with_its_hashes(lock):
    found = entries(lock)
    assert len(found) > 20
    for entry in found:
        assert PIN.match(entry), f"{lock}: not pinned with ==: {entry[:80]}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"{lock}: no hash: {entry[:80]}"
    assert not LOCAL & set(pins(lock)), "the local packages are installed after, with --no-deps"


def test_the_app_lock_holds_every_runtime_dependency():
    locked = set(pins("app.lock"))
    lib = project("lib/pyproject.toml")
    wanted = names(project()["dependencies"]) - LOCAL
    wanted |= names(lib["dependencies"])
    for extra in ("prometheus", "client", "hiredis"):  # the extras the app asks of the library
        wanted |= names(lib["optional-dependencies"][extra])
    assert wanted - locked == set()
    assert "setuptools" in locked  # builds the local packages without build isolation


def test_the_test_lock_holds_every_extra_ci_installs_at_the_images_versions():
    app, test = pins("app.lock"), pins("test.lock")
    extras = project()["optional-dependencies"]
    wanted = {n for extra in ("dev", "test", "bench", "sqs") for n in names(extras[extra])} - LOCAL
    wanted |= names(project("lib/pyproject.toml")["optional-dependencies"]["sqs"])
    assert wanted - set(test) == set()
    assert {n: v for n, v in app.items() if test.get(n) != v} == {}  # CI tests what ships


def test_the_image_and_ci_install_from_the_locks():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --only-binary=:all: -r /tmp/app.lock" in dockerfile
    assert "COPY requirements/app.lock /tmp/app.lock" in dockerfile
    assert "pip install --no-deps --no-build-isolation ./lib ." in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes --only-binary=:all: -r requirements/test.lock" in makefile
    assert "--no-deps --no-build-isolation -e ./lib -e ." in makefile
