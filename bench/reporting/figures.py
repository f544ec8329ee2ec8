"""Which plot each saved result gets; used after a run and by ``--report-only``."""
from __future__ import annotations

import json
import re

from bench.reporting import plots
from bench.harness.env import OUT, RESULTS

LIMIT = 200  # experiment (b)'s queue limit


def short(label: str) -> str:
    """A bar label that fits: flags abbreviated, explanations dropped."""
    label = re.sub(r"\s*\(.*?\)", "", label)
    return label.replace("--prefetch-multiplier ", "p").replace("floodgate", "fg")


def _e_values(r: dict) -> dict:
    values = dict(r["median_rate"])
    once = {k: v for k, v in r["screen"].items() if k not in r["median_rate"]}
    once.update({k: v["rate"] for k, v in r["diagnostics"].items()})
    values.update({f"{short(k)} *": v for k, v in once.items()})
    return {short(k): v for k, v in values.items()}


def draw(key: str, r: dict) -> None:
    exp, broker = key.split("_", 1)
    if exp == "a":
        plots.bars(f"{key}.png", f"(a) submit rate, median msg/s - {broker}",
                   r["median_rate"], "messages/s")
    elif exp == "b":
        plots.overload(f"{key}.png", f"(b) 3x overload - {broker}",
                       {"guarded": r["guarded"], "unguarded": r["unguarded"]}, LIMIT)
    elif exp == "c":
        title = ("Retry-After after light traffic and a burst" if r.get("prelude") == "trickle"
                 else "clients obeying Retry-After")
        plots.clients(f"{key}.png", f"(c) {title} - {broker.split('_')[0]}", r)
    elif exp == "d":
        plots.wait_limit(f"{key}.png",
                         f"(d) wait limit 2 s, one of two workers stopped - {broker}", r)
    elif exp == "f":
        plots.http_overload(f"{key}.png", f"(f) {broker}", r,
                            [k for k in r if k.startswith("x") and k[1:].replace(".", "").isdigit()])
    elif exp == "e":
        fastest = r["median_rate"][r["plain_fastest"]]
        plots.bars(f"{key}.png", f"(e) drain rate of no-op tasks - {broker} (* one run)",
                   _e_values(r), "tasks/s", reference=0.9 * fastest)


def redraw_all() -> None:
    """Plots from the full results in bench/out/ (with series), where they still exist."""
    for path in RESULTS.glob("*.json"):
        full = OUT / f"{path.stem}.full.json"
        if path.stem != "meta" and full.exists():
            draw(path.stem, json.loads(full.read_text()))
