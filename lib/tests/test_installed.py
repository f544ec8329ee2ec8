"""What a user's ``pip install celery-floodgate`` holds, checked on the installed wheel,
and the Celery and kombu releases it accepts (celery_floodgate.compat).

The nox sessions (lib/noxfile.py) set FLOODGATE_LIB_INSTALLED=1 and run a copy of this
suite against the wheel installed in a fresh virtualenv; there the package must come
from that virtualenv's site-packages, never from the checkout
(FLOODGATE_LIB_CHECKOUT). The resource checks also hold for an editable install.
"""
from __future__ import annotations

import os
import sys
import sysconfig
from importlib import metadata, resources
from pathlib import Path

import pytest

import celery_floodgate

INSTALLED = os.environ.get("FLOODGATE_LIB_INSTALLED") == "1"
CHECKOUT = Path(os.environ.get("FLOODGATE_LIB_CHECKOUT", "/work/main")).resolve()
SOURCE = CHECKOUT / "lib" / "src" / "celery_floodgate"
#: The scripts the transports load at import; any other .lua in the source must ship too.
LUA_SCRIPTS = {"admit.lua", "admit_many.lua", "consume.lua", "line.lua", "sqs_admit.lua",
               "sqs_reconcile.lua", "ticket.lua"}
needs_wheel = pytest.mark.skipif(not INSTALLED, reason="FLOODGATE_LIB_INSTALLED=1: nox sessions")


@needs_wheel
def test_the_package_is_the_wheel_in_this_virtualenvs_site_packages() -> None:
    package = Path(celery_floodgate.__file__).resolve()
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert package.is_relative_to(site_packages), (package, site_packages)
    assert sys.prefix != sys.base_prefix, "not in a virtualenv"
    assert not package.is_relative_to(CHECKOUT), f"{package} is under the checkout {CHECKOUT}"


@needs_wheel
def test_the_checkout_is_not_importable() -> None:
    on_path = [p for p in sys.path if p and Path(p).resolve().is_relative_to(CHECKOUT)]
    assert on_path == []


def test_the_distribution_ships_py_typed_and_every_lua_script() -> None:
    package = resources.files("celery_floodgate")
    assert package.joinpath("py.typed").is_file()
    transports = package.joinpath("transports")
    shipped = {e.name for e in transports.iterdir() if e.name.endswith(".lua")}
    in_source = {p.name for p in (SOURCE / "transports").glob("*.lua")}
    assert shipped >= LUA_SCRIPTS | in_source
    for name in in_source:  # the very scripts of this checkout, not stale or empty ones
        assert transports.joinpath(name).read_text() == (SOURCE / "transports" / name).read_text()


@needs_wheel
def test_the_wheels_record_lists_py_typed_and_the_scripts() -> None:
    files = {str(f) for f in metadata.distribution("celery-floodgate").files or ()}
    assert "celery_floodgate/py.typed" in files
    in_source = {p.name for p in (SOURCE / "transports").glob("*.lua")}
    assert {f"celery_floodgate/transports/{name}" for name in LUA_SCRIPTS | in_source} <= files


def test_version_is_the_distributions_metadata_version() -> None:
    assert celery_floodgate.__version__ == metadata.version("celery-floodgate")
    assert celery_floodgate.__version__ != "0+unknown"


def test_the_users_own_tasks_and_config_do_not_shadow_the_library(project) -> None:
    # The plain project's tasks.py and config.py sit first on sys.path; the library's
    # modules are still its own, and the project's are the user's.
    assert Path(project.__file__).name == "tasks.py"
    assert project.app.conf.task_default_queue == "celery"
    assert sys.modules["config"].__file__ == str(Path(project.__file__).with_name("config.py"))
    for name, module in list(sys.modules.items()):
        if name == "celery_floodgate" or name.startswith("celery_floodgate."):
            assert Path(module.__file__).resolve().is_relative_to(
                Path(celery_floodgate.__file__).resolve().parent), name
    assert project.guard is celery_floodgate.guard_for(project.app)


@pytest.mark.parametrize(("text", "release"), [
    ("5.3.6", (5, 3)), ("5.5.0rc1", (5, 5)), ("5.10", (5, 10)), ("6", (6, 0)),
    ("5.7.0.post1", (5, 7)), ("", (0, 0))])
def test_a_release_is_read_as_major_and_minor(text: str, release: tuple[int, int]) -> None:
    from celery_floodgate.compat import release_of

    assert release_of(text) == release


def test_an_older_celery_is_refused_with_a_sentence_naming_both_versions() -> None:
    from celery_floodgate.compat import REQUIRED, unsupported

    wanted = ".".join(map(str, REQUIRED["celery"]))
    old = f"{REQUIRED['celery'][0]}.{REQUIRED['celery'][1] - 1}.6"
    problems = unsupported({"celery": old, "kombu": "9.0.0"})
    assert problems == [f"celery {old} is installed, but celery-floodgate needs "
                        f"celery >= {wanted}; upgrade it (pip install 'celery>={wanted}')"]
    assert unsupported({"celery": None, "kombu": "9.0"}) == [
        f"celery is not installed; celery-floodgate needs celery >= {wanted}"]


def test_the_installed_releases_are_supported_and_install_checks_them() -> None:
    from celery import Celery

    from celery_floodgate import NotInstalled, compat, install

    assert compat.unsupported(compat.installed_versions()) == []
    app = Celery("compat", broker="redis://127.0.0.1:1/0", set_as_current=False)
    real = compat.installed_versions
    compat.installed_versions = lambda: {"celery": "5.0.0", "kombu": "5.0.0"}
    try:
        with pytest.raises(NotInstalled, match=r"celery 5\.0\.0 is installed, but"):
            install(app, limits={"celery": 10})
    finally:
        compat.installed_versions = real
        app.close()
