"""Health checks for orchestration (docker-compose ``healthcheck:``, Kubernetes probes).

    python -m config.health worker [--name worker@HOST] [--timeout-s 5]
    python -m config.health beat [--max-age-s 30] [--file var/beat-heartbeat]

Exit status 0 when healthy; otherwise 1 and one sentence on stderr saying why.

* ``worker``: a ping through the broker to that one worker's node name
  (``app.control.ping``: the broker's pidbox/control exchange). The worker answers
  from its own consumer loop, so a reply proves it consumes, not only that its
  process exists. Floodgate's default pool (tasks/runtime/pool.py) runs each task in that
  loop: a worker answers between tasks, so while one task runs longer than
  ``--timeout-s`` the check fails; give the healthcheck retries that outlast the
  longest task (docker-compose.yml does).
* ``beat``: the heartbeat file beat rewrites on every tick (scheduler/heartbeat.py)
  is younger than ``--max-age-s``. No broker needed.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time


def check_worker(name: str, timeout_s: float) -> str | None:
    """``None`` when the worker ``name`` answered a ping; otherwise why not."""
    from config import app

    try:
        replies = app.control.ping(destination=[name], timeout=timeout_s, limit=1)
    except Exception as exc:  # noqa: BLE001 - any failure to ask is "unhealthy"
        return f"could not ping worker {name} through the broker: {type(exc).__name__}: {exc}"
    finally:
        app.close()
    if any(name in reply for reply in replies or ()):
        return None
    return (f"worker {name} did not answer a ping through the broker within {timeout_s:g} s: "
            f"it is down, stopped, cut off from the broker, or busy with one task longer than that")


def check_beat(max_age_s: float, path=None) -> str | None:
    """``None`` when beat's heartbeat is younger than ``max_age_s``; otherwise why not."""
    from scheduler import heartbeat

    where = path or heartbeat.default_path()
    tick = heartbeat.read(where).get("tick")
    if not isinstance(tick, (int, float)):
        return f"beat has written no heartbeat to {where}: it has not started, or not here"
    age = time.time() - tick
    if age > max_age_s:
        return (f"beat's last heartbeat in {where} is {age:.0f} s old (limit {max_age_s:g} s): "
                f"beat is stuck or stopped")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.health", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    worker = sub.add_parser("worker", help="ping one worker through the broker")
    worker.add_argument("--name", default=f"worker@{socket.gethostname()}",
                        help="the worker's node name (-n); default worker@<this host>")
    worker.add_argument("--timeout-s", type=float, default=5.0)
    beat = sub.add_parser("beat", help="check that beat's heartbeat is recent")
    beat.add_argument("--max-age-s", type=float, default=30.0)
    beat.add_argument("--file", default=None,
                      help="the heartbeat file; default $FLOODGATE_VAR_DIR/beat-heartbeat")
    args = parser.parse_args(argv)

    if args.part == "worker":
        problem = check_worker(args.name, args.timeout_s)
        ok = f"worker {args.name} answered"
    else:
        problem = check_beat(args.max_age_s, args.file)
        ok = "beat is ticking"
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print(f"healthy: {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
