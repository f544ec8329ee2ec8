"""``floodgate status``: the whole system on one screen.

    floodgate status            # print once
    floodgate status --watch    # refresh in place (Ctrl-C stops)
    floodgate status --json     # the same figures, for scripts

Per queue: depth, limit (a length, or a wait limit and the length it allows now),
drain rate, accepted and refused in the last minute (across every submitting
process: lib/src/celery_floodgate/submits.py), and the age of the oldest message (Redis
only). Then each worker and the queues it consumes (``inspect().active_queues()``,
1 s timeout), when beat last sent each schedule entry (scheduler/heartbeat.py,
the heartbeat file beside beat's schedule file: ``$FLOODGATE_VAR_DIR/beat-heartbeat``
by default, ``--heartbeat`` for another), and, with fair admission, each queue's
tenants: accepted and refused per class in the last minute and messages held
(config/tenant_status.py; last, so a short terminal crops it first). Reads the same
environment as the other parts (BROKER_URL, RESULT_BACKEND, METER_URL, QUEUE_LIMITS, …).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from config.tenant_status import collect_tenants, tenant_table

INSPECT_TIMEOUT_S = 1.0


def collect(app, heartbeat_path: str | None = None) -> dict:
    """Every figure the screen shows, as plain data."""
    from scheduler import heartbeat
    from celery_floodgate import guard_for, queue_stats, recent_counts

    guard = guard_for(app)
    stats = queue_stats(app)
    try:
        counts = recent_counts(app) if guard is not None else {}
    except Exception:  # noqa: BLE001 - the meter's Redis down: counts unknown, not an error
        counts = {}
    queues = {}
    for name, figures in stats.items():
        limit = guard.limits[name]
        queues[name] = {
            "depth": figures["depth"],
            "limit": limit.length,
            "wait_limit_s": limit.wait_s,
            "bound": figures["limit"],
            "drain_rate": figures["drain_rate"],
            "accepted_last_minute": counts.get(name, {}).get("accepted"),
            "refused_last_minute": counts.get(name, {}).get("refused"),
            "oldest_age_s": figures["oldest_age_s"],
            "tenants": collect_tenants(guard, name),
        }
    now = time.time()
    beat = heartbeat.read(heartbeat_path)
    last = heartbeat.last_runs(heartbeat_path)
    entries = {name: {"last_run": last.get(name),
                      "ago_s": None if name not in last else round(now - last[name], 1)}
               for name in {**dict.fromkeys(app.conf.beat_schedule or {}), **last}}
    return {
        "at": now,
        "broker": guard.broker_kind if guard is not None else None,
        "queues": queues,
        "workers": workers(app),
        "beat": {"tick": beat.get("tick"),
                 "tick_ago_s": round(now - beat["tick"], 1) if beat.get("tick") else None,
                 "entries": entries},
    }


def workers(app) -> dict[str, list[str]] | None:
    """Worker name -> queues it consumes; None when the broker did not answer."""
    try:
        replies = app.control.inspect(timeout=INSPECT_TIMEOUT_S).active_queues() or {}
    except Exception:  # noqa: BLE001
        return None
    return {name: sorted(q["name"] for q in queues) for name, queues in sorted(replies.items())}


def _num(value, fmt: str = "{}", none: str = "-") -> str:
    return none if value is None else fmt.format(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def render(data: dict):
    """The screen: queues, workers, beat, tenants."""
    when = time.strftime("%H:%M:%S", time.localtime(data["at"]))
    queues = Table(title=f"Queues ({data['broker']} broker, {when})", title_justify="left",
                   expand=False)
    for column in ("queue", "depth", "limit", "drain/s", "accepted 1m", "refused 1m",
                   "oldest"):
        queues.add_column(column, justify="left" if column == "queue" else "right")
    for name, q in data["queues"].items():
        limit = (str(q["limit"]) if q["limit"] is not None
                 else f"wait {q['wait_limit_s']:g}s (now {q['bound']})")
        full = q["depth"] is not None and q["bound"] and q["depth"] >= q["bound"]
        queues.add_row(
            name,
            Text(_num(q["depth"], none="?"), style="bold red" if full else ""),
            limit,
            _num(q["drain_rate"], "{:.1f}"),
            _num(q["accepted_last_minute"]),
            Text(_num(q["refused_last_minute"]),
                 style="bold red" if q["refused_last_minute"] else ""),
            _num(q["oldest_age_s"], "{:.1f} s"),
        )
    workers_table = Table(title="Workers", title_justify="left")
    workers_table.add_column("worker")
    workers_table.add_column("queues")
    if data["workers"] is None:
        workers_table.add_row(Text("broker did not answer", style="red"), "")
    elif not data["workers"]:
        workers_table.add_row(Text("no worker answered within 1 s", style="yellow"), "")
    for name, consumed in (data["workers"] or {}).items():
        workers_table.add_row(name, ", ".join(consumed))
    beat = data["beat"]
    beat_title = ("Beat (last tick " + _age(beat["tick_ago_s"]) + ")" if beat["tick"]
                  else "Beat (no heartbeat found)")
    beat_table = Table(title=beat_title, title_justify="left")
    beat_table.add_column("schedule entry")
    beat_table.add_column("last sent", justify="right")
    for name, entry in sorted(beat["entries"].items()):
        beat_table.add_row(name, _age(entry["ago_s"]))
    tenants = tenant_table(data["queues"])
    return Group(queues, workers_table, beat_table, *([tenants] if tenants else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="floodgate", description="Floodgate operations")
    sub = parser.add_subparsers(dest="command")
    status = sub.add_parser("status", help="queues, workers and beat on one screen")
    for p in (parser, status):
        p.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
        p.add_argument("--json", action="store_true", help="print the figures as JSON")
        p.add_argument("--interval", type=float, default=2.0,
                       help="seconds between refreshes with --watch (default 2)")
        p.add_argument("--heartbeat", default=None,
                       help="beat's heartbeat file (default: $FLOODGATE_VAR_DIR/beat-heartbeat)")
    args = parser.parse_args(argv)

    from config import app  # reads the environment; a bad value exits with a sentence

    console = Console()
    try:
        if args.json:
            while True:
                print(json.dumps(collect(app, args.heartbeat)), flush=True)
                if not args.watch:
                    return 0
                time.sleep(args.interval)
        if not args.watch:
            console.print(render(collect(app, args.heartbeat)))
            return 0
        with Live(render(collect(app, args.heartbeat)), console=console,
                  auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(render(collect(app, args.heartbeat)), refresh=True)
    except KeyboardInterrupt:
        return 0
    finally:
        app.close()


if __name__ == "__main__":
    sys.exit(main())
