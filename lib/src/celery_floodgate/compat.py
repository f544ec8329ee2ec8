"""The Celery and kombu releases this library supports, checked when it is installed on an app.

The bounds are the compatibility matrix's (lib/noxfile.py, docs/compatibility.md):
the oldest minor releases whose suite passes. lib/pyproject.toml declares the same
bounds, so pip refuses an older release; this check names the problem where pip was
bypassed (a pinned environment, ``--no-deps``).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from celery_floodgate.errors import NotInstalled

#: distribution -> the oldest (major, minor) release supported.
REQUIRED: dict[str, tuple[int, int]] = {"celery": (5, 3), "kombu": (5, 3)}


def release_of(text: str) -> tuple[int, int]:
    """``"5.3.6"`` -> ``(5, 3)``; ``"5.5.0rc1"`` -> ``(5, 5)``; unreadable parts count as 0."""
    parts = (text.split(".") + ["0", "0"])[:2]
    numbers = []
    for part in parts:
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        numbers.append(int(digits) if digits else 0)
    return numbers[0], numbers[1]


def unsupported(installed: dict[str, str | None]) -> list[str]:
    """One sentence per distribution in ``installed`` (name -> version) below REQUIRED."""
    problems = []
    for name, minimum in REQUIRED.items():
        found = installed.get(name)
        wanted = ".".join(map(str, minimum))
        if found is None:
            problems.append(f"{name} is not installed; celery-floodgate needs {name} >= {wanted}")
        elif release_of(found) < minimum:
            problems.append(f"{name} {found} is installed, but celery-floodgate needs "
                            f"{name} >= {wanted}; upgrade it (pip install '{name}>={wanted}')")
    return problems


def installed_versions() -> dict[str, str | None]:
    """The installed version of each distribution in REQUIRED (None: not installed)."""
    found: dict[str, str | None] = {}
    for name in REQUIRED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def require_supported() -> None:
    """Raise NotInstalled naming each installed release older than REQUIRED."""
    problems = unsupported(installed_versions())
    if problems:
        raise NotInstalled("; ".join(problems))
