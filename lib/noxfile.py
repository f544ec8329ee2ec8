"""The library proven as installed, across the Celery releases it supports.

Every ``tests`` session builds the wheel once (``python -m build``: an sdist, then
the wheel from it), installs it with the ``prometheus`` and ``client`` extras into
a fresh virtualenv that holds no checkout, and runs a *copy* of ``lib/tests`` in a
temporary directory, so neither ``lib/src`` nor the repository root is importable:
the suite sees exactly what ``pip install celery-floodgate`` gives a user. It runs
once per broker (``FLOODGATE_TEST_BROKER=redis``, then ``amqp``) with
``FLOODGATE_LIB_INSTALLED=1`` (``tests/test_installed.py`` then checks where the
package came from), then the example projects' own tests (``examples/*``).

Sessions (``nox -f lib/noxfile.py -l`` lists them):

* ``tests(py3.X-celery5.N)``: Python 3.11 and 3.13 x every Celery minor release
  from 5.3 (the oldest supported), each with the kombu of the same minor
  (``kombu[redis]~=5.N.0``, which also brings the redis-py range that kombu accepts).
* ``mypy``: ``mypy --strict`` on ``src/celery_floodgate`` (lib/pyproject.toml).

Tags: ``-t ci`` (oldest and newest Celery on Python 3.11, and mypy: run on every
change), ``-t matrix`` (everything). ``make matrix`` runs the matrix. Arguments after
``--`` go to the library suite's pytest (``nox -f lib/noxfile.py -t ci -- -x -k limits``).

Virtualenvs live outside the checkout (``~/.cache/celery-floodgate/nox``, or
``FLOODGATE_NOX_ENVDIR``), so an installed package can never be one under it.
Python 3.13 is found on PATH as ``python3.13``; a missing interpreter is an error.
The suites' own settings pass through: FLOODGATE_TEST_REDIS and FLOODGATE_TEST_PREFIX
move their Redis databases and RabbitMQ vhosts (a private redis-server, say).
"""
from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

import nox
import nox.command

LIB = Path(__file__).resolve().parent
REPO = LIB.parent
EXAMPLES = REPO / "examples"
BROKERS = ("redis", "amqp")
PYTHON_OLDEST, PYTHON_NEWEST = "3.11", "3.13"
#: Celery minor -> (Celery pin, kombu pin). Each Celery minor with the kombu minor
#: released beside it; redis-py comes from kombu's own ``redis`` extra (docs/compatibility.md;
#: lib/pyproject.toml and celery_floodgate.compat hold the same lower bound).
CELERY = {
    minor: (f"celery~={minor}.0", f"kombu[redis]~={minor}.0")
    for minor in ("5.3", "5.4", "5.5", "5.6", "5.7")
}
CELERY_OLDEST, CELERY_NEWEST = min(CELERY), max(CELERY)
#: boto3: kombu's SQS transport imports it; tests/test_private_api.py checks that transport too.
TEST_DEPS = ("pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "boto3")
EXTRAS = "prometheus,client,asyncio"

nox.options.envdir = os.environ.get(
    "FLOODGATE_NOX_ENVDIR", str(Path.home() / ".cache" / "celery-floodgate" / "nox"))
nox.options.download_python = "never"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = []  # `nox` alone lists nothing to run: name a session or a tag

_wheel: Path | None = None
_suite: Path | None = None


def _cells() -> list[nox.param]:
    cells = []
    for python in (PYTHON_OLDEST, PYTHON_NEWEST):
        for minor in CELERY:
            ci = python == PYTHON_OLDEST and minor in (CELERY_OLDEST, CELERY_NEWEST)
            cells.append(nox.param(python, minor, id=f"py{python}-celery{minor}",
                                   tags=["matrix", *(["ci"] if ci else [])]))
    return cells


def built_wheel(session: nox.Session) -> Path:
    """The library's wheel, built once per nox run from an sdist of lib/ (as PyPI gets it)."""
    global _wheel
    if _wheel is not None and _wheel.exists():
        return _wheel
    Path(nox.options.envdir).mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="wheel-", dir=nox.options.envdir))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    if importlib.util.find_spec("build") is not None:  # nox's own interpreter has `build`
        session.run(sys.executable, "-m", "build", "--outdir", str(out), str(LIB),
                    external=True, silent=True)
    else:
        session.install("build")
        session.run("python", "-m", "build", "--outdir", str(out), str(LIB), silent=True)
    (wheel,) = out.glob("celery_floodgate-*.whl")
    session.log(f"built {wheel.name}: {wheel.stat().st_size} bytes")
    _wheel = wheel
    snapshot_suite(out)
    return wheel


def snapshot_suite(out: Path) -> None:
    """lib/tests as it was when the wheel was built: every session of a run tests the same
    suite against the same wheel, however long the run and whatever changes meanwhile."""
    global _suite
    _suite = out / "tests"
    shutil.copytree(LIB / "tests", _suite,
                    ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))


def copied_suite(session: nox.Session) -> Path:
    """lib/tests copied into the session's temporary directory, with pyproject's pytest
    settings as a pytest.ini beside it: nothing of the checkout is on sys.path."""
    root = Path(session.create_tmp()) / "suite"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(_suite or LIB / "tests", root / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    ini = tomllib.loads((LIB / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    lines = ["[pytest]"] + [
        f"{key} = {' '.join(value) if isinstance(value, list) else value}"
        for key, value in ini.items()]
    (root / "pytest.ini").write_text("\n".join(lines) + "\n")
    return root


def installed_env(broker: str) -> dict[str, str | None]:
    return {
        "FLOODGATE_TEST_BROKER": broker,
        "FLOODGATE_LIB_INSTALLED": "1",
        "FLOODGATE_LIB_CHECKOUT": str(REPO),
        "PYTHONPATH": None,  # whatever the caller's shell had, not here
    }


def run_suite(session: nox.Session) -> None:
    """The library's suite on each broker, then the example projects' tests; every run
    runs even if one before it failed. Each library run leaves a JUnit report in
    ``<envdir>/reports``."""
    root = copied_suite(session)
    reports = Path(nox.options.envdir) / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    session.chdir(root)
    failed = []
    for broker in BROKERS:
        session.log(f"library suite on {broker}")
        report = reports / f"{session.name}-{broker}.xml"
        try:
            session.run("pytest", f"--junitxml={report}", *session.posargs,
                        env=installed_env(broker))
        except nox.command.CommandFailed:
            failed.append(f"the library suite on {broker}")
    failed += run_examples(session)
    if failed:
        session.error(f"failed: {'; '.join(failed)}")


def run_examples(session: nox.Session) -> list[str]:
    """Each example project (``examples/<name>/``, with tests of its own) against the
    installed wheel, from a copy, once per broker; returns what failed."""
    projects = sorted(p for p in EXAMPLES.glob("*/") if any(p.rglob("test_*.py")))
    if not projects:
        session.log(f"no example projects with tests under {EXAMPLES}")
    failed = []
    for project in projects:
        copy = Path(session.create_tmp()) / "examples" / project.name
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(project, copy, ignore=shutil.ignore_patterns(
            "__pycache__", ".hypothesis", ".pytest_cache"))
        session.chdir(copy)
        for broker in BROKERS:
            session.log(f"example {project.name} on {broker}")
            try:
                session.run("pytest", "-p", "no:cacheprovider", env=installed_env(broker))
            except nox.command.CommandFailed:
                failed.append(f"example {project.name} on {broker}")
    return failed


@nox.session
@nox.parametrize(("python", "celery"), _cells())
def tests(session: nox.Session, celery: str) -> None:
    """The installed wheel's suite on one Python with one Celery minor, on both brokers."""
    celery_pin, kombu_pin = CELERY[celery]
    wheel = built_wheel(session)
    session.install(f"{wheel}[{EXTRAS}]", celery_pin, kombu_pin, *TEST_DEPS)
    session.run("python", "-c", "import celery, kombu, amqp, redis; print("
                "'celery', celery.__version__, 'kombu', kombu.__version__, "
                "'amqp', amqp.__version__, 'redis', redis.__version__)")
    run_suite(session)


@nox.session(python=PYTHON_OLDEST, tags=["ci", "matrix"])
def mypy(session: nox.Session) -> None:
    """``mypy --strict`` on the library's source, with its dependencies and every extra's."""
    project = tomllib.loads((LIB / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    session.install("mypy>=1.10", *project["dependencies"],
                    *extras["prometheus"], *extras["client"], *extras["asyncio"], "boto3")
    session.chdir(LIB)
    session.run("mypy")  # files and --strict: lib/pyproject.toml (posargs are pytest's)
