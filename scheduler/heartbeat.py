"""Beat's heartbeat: proof that beat is ticking, and when it last sent each entry.

``celery beat`` runs :class:`HeartbeatScheduler` (``beat_scheduler`` in
config.celeryconfig): Celery's own ``PersistentScheduler`` that, after every
tick, writes one small JSON file next to its schedule file
(``var/beat-heartbeat`` by default)::

    {"tick": 1764629182.4, "pid": 12, "entries": {"aggregate-closed-window": 1764629160.0}}

``tick`` is when beat last looked at its schedule (epoch seconds); ``entries``
holds, per schedule entry name, when beat last *sent* it (a publish that raised,
say ``QueueFull``, does not count). The file is replaced atomically, so a reader
never sees half of it; it lives on the beat's own disk, so the health check
(``python -m config.health beat``) needs no broker.

Beat ticks at least every :data:`TICK_EVERY_S` seconds (not Celery's 300 s
``beat_max_loop_interval``), so a heartbeat older than a few ticks means beat is
stuck or gone. Readers: :func:`read` and :func:`last_runs`.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from celery.beat import PersistentScheduler

from celery_floodgate.fairness import CRITICAL, submitting_as
from config.settings import SYSTEM_TENANT

#: Beat wakes at least this often, so the heartbeat is never older than this while it runs.
TICK_EVERY_S = 5.0
FILENAME = "beat-heartbeat"


def default_path() -> Path:
    """Where ``celery beat`` with the default schedule file writes: ``$FLOODGATE_VAR_DIR``
    (``var``, relative to the working directory, by default)."""
    return Path(os.environ.get("FLOODGATE_VAR_DIR") or "var") / FILENAME


def path_beside(schedule_filename: str | os.PathLike | None) -> Path:
    """The heartbeat file of a beat whose schedule file is ``schedule_filename`` (``-s``)."""
    if not schedule_filename:
        return default_path()
    return Path(schedule_filename).parent / FILENAME


def read(path: str | os.PathLike | None = None) -> dict:
    """The heartbeat as written (``{}`` when there is none yet or it is unreadable)."""
    try:
        data = json.loads(Path(path or default_path()).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def last_runs(path: str | os.PathLike | None = None) -> dict[str, float]:
    """When beat last sent each schedule entry: ``{entry name: epoch seconds}``.

    Entries never sent yet are absent; ``{}`` when beat never ran here.
    """
    entries = read(path).get("entries") or {}
    return {str(name): float(at) for name, at in entries.items()
            if isinstance(at, (int, float))}


def write(path: Path, tick: float, entries: dict[str, float]) -> None:
    """Replace the heartbeat file atomically (a temporary file, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"tick": tick, "pid": os.getpid(), "entries": entries}))
    os.replace(tmp, path)


class HeartbeatScheduler(PersistentScheduler):
    """Celery's default scheduler, plus the heartbeat file.

    https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html#using-custom-scheduler-classes
    """

    def __init__(self, *args, **kwargs):
        self.heartbeat_path = path_beside(kwargs.get("schedule_filename"))
        # Keep what an earlier run of beat recorded: a restart forgets nothing.
        self.last_sent: dict[str, float] = last_runs(self.heartbeat_path)
        super().__init__(*args, **kwargs)
        self.max_interval = min(self.max_interval, TICK_EVERY_S)

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        # Beat's entries are the service's own critical work: a flood of users' work
        # never crowds them out (fair admission, celery_floodgate.fairness).
        with submitting_as(SYSTEM_TENANT, CRITICAL):
            result = super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        self.last_sent[entry.name] = time.time()  # only reached when the publish succeeded
        return result

    def tick(self, *args, **kwargs):
        interval = super().tick(*args, **kwargs)
        self.beat()
        return interval

    def beat(self) -> None:
        try:
            write(self.heartbeat_path, time.time(), dict(self.last_sent))
        except OSError as exc:  # a full disk must not stop the schedule; health then fails
            from celery.beat import logger

            logger.error("beat: could not write the heartbeat %s: %s", self.heartbeat_path, exc)
