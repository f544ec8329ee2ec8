"""PNG plots (matplotlib, Agg backend), small enough to commit."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.harness.env import PLOTS  # noqa: E402

DPI = 80


def _save(fig, name: str) -> str:
    PLOTS.mkdir(parents=True, exist_ok=True)
    path = PLOTS / name
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return f"plots/{name}"


def _thin(points: list, limit: int = 4000) -> list:
    step = max(1, len(points) // limit)
    return points[::step]


def bars(name: str, title: str, values: dict[str, float], ylabel: str,
         reference: float | None = None) -> str:
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.35 * len(values)))
    labels = list(values)
    ax.barh(labels, [values[k] or 0 for k in labels], color="tab:blue")
    if reference:
        ax.axvline(reference, color="tab:red", linestyle="--", label="0.9 x plain fastest")
        ax.legend(loc="lower right")
    ax.set_xlabel(ylabel)
    ax.set_title(title)
    ax.invert_yaxis()
    return _save(fig, name)


def overload(name: str, title: str, runs: dict[str, dict], limit: int) -> str:
    """(b): depth over time (log) and wait-to-start by submit time, guarded vs unguarded."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    colours = {"guarded": "tab:green", "unguarded": "tab:red"}
    for label, run in runs.items():
        t, d = zip(*[(t, d) for t, d in run["series"]["depth"] if d is not None])
        top.plot(t, [max(1, x) for x in d], label=f"{label} depth", color=colours[label])
        pts = _thin(run["series"]["waits"])
        bottom.scatter([p[0] for p in pts], [p[1] for p in pts], s=2, color=colours[label],
                       label=f"{label}: wait of started jobs")
    top.axhline(limit, color="black", linestyle=":", label=f"limit {limit}")
    top.set_yscale("log")
    top.set_ylabel("queue depth (ready)")
    top.legend(fontsize=8)
    top.set_title(title)
    bottom.set_yscale("log")
    bottom.set_xlabel("submit time (s from start of offer)")
    bottom.set_ylabel("wait to start (s)")
    bottom.legend(fontsize=8, markerscale=4)
    return _save(fig, name)


def clients(name: str, title: str, run: dict) -> str:
    """(c): depth and clients waiting on Retry-After; the Retry-After values handed out."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    t, depth, waiting = zip(*run["series"]["samples"])
    top.plot(t, depth, label="queue depth", color="tab:blue")
    top.plot(t, waiting, label="clients sleeping on Retry-After", color="tab:orange")
    top.legend(fontsize=8)
    top.set_title(title)
    hints = run["series"]["hints"]
    if hints:
        bottom.scatter([h[0] for h in hints], [h[1] for h in hints], s=3, color="tab:purple")
    bottom.set_ylabel("Retry-After given (s)")
    bottom.set_xlabel("time (s)")
    return _save(fig, name)


def wait_limit(name: str, title: str, run: dict) -> str:
    """(d): wait by accept time with the change and the target; depth, bound and rate."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    pts = _thin(run["series"]["waits"])
    top.scatter([p[0] for p in pts], [p[1] for p in pts], s=2, color="tab:blue",
                label="wait to start, by accept time")
    change = run["change_at_s"]
    top.axvline(change, color="tab:red", label="one of two workers stopped")
    top.axvline(change + run["settle_s"], color="tab:red", linestyle="--",
                label=f"change + {run['settle_s']:g} s")
    top.axhline(run["target_p99_s"], color="black", linestyle=":", label="2.2 s target (p99)")
    top.set_ylabel("wait (s)")
    top.legend(fontsize=8, markerscale=4)
    top.set_title(title)
    t, depth, bound, rate = zip(*run["series"]["samples"])
    bottom.plot(t, depth, label="depth", color="tab:blue")
    bottom.plot(t, bound, label="bound = 2 s x measured rate", color="tab:green")
    bottom.axvline(change, color="tab:red")
    bottom.set_ylabel("messages")
    twin = bottom.twinx()
    twin.plot(t, [r or 0 for r in rate], color="tab:gray", linestyle="--", label="measured rate")
    twin.set_ylabel("drain rate (msg/s)")
    bottom.legend(fontsize=8, loc="upper left")
    twin.legend(fontsize=8, loc="upper right")
    bottom.set_xlabel("time (s)")
    return _save(fig, name)


def http_overload(name: str, title: str, r: dict, factors: list[str]) -> str:
    """(f): per second, over each phase: answers and completions, depth vs limit,
    latency p50/p99 of 202s and 503s with their targets."""
    cols = [k for k in factors if k in r and "series" in r[k]]
    fig, axes = plt.subplots(3, max(1, len(cols)), figsize=(6 * max(1, len(cols)), 8.5),
                             squeeze=False, sharex="col")
    drain, limit = r.get("drain_rate_per_s"), r.get("limit")
    for c, key in enumerate(cols):
        run, (rates, depth, lat) = r[key], axes[:, c]
        s = run["series"]
        rates.plot(s["t"], s["ok"], label="202 /s", color="tab:green", drawstyle="steps-post")
        rates.plot(s["t"], s["refused"], label="503 /s", color="tab:orange",
                   drawstyle="steps-post")
        if any(s["other"]):
            rates.plot(s["t"], s["other"], label="timeouts, errors, other /s", color="tab:red",
                       drawstyle="steps-post")
        rates.plot(s["t"], s["completed"], label="jobs finished /s", color="tab:blue",
                   drawstyle="steps-post")
        if drain:
            rates.axhline(drain, color="black", linestyle=":", label=f"drain alone {drain:g}/s")
        rates.set_yscale("symlog", linthresh=10)
        rates.set_ylim(bottom=0)
        rates.set_ylabel("answers / jobs finished per second")
        rates.set_title(f"{title}: {run['factor']:g}x drain ({run['offered_rate_per_s']}/s offered)",
                        fontsize=10)
        rates.legend(fontsize=7, loc="center right")
        pts = [(t, d) for t, d in s["depth"] if d is not None]
        if pts:
            depth.plot([p[0] for p in pts], [p[1] for p in pts], color="tab:blue",
                       label="fanout depth (ready), 10 Hz")
        if limit:
            depth.axhline(limit, color="tab:red", linestyle=":", label=f"limit {limit}")
        depth.set_ylabel("messages")
        depth.legend(fontsize=7, loc="lower right")
        for field, colour, style, label in (
                ("lat202_p50", "tab:green", "--", "202 p50"), ("lat202_p99", "tab:green", "-", "202 p99"),
                ("lat503_p50", "tab:orange", "--", "503 p50"), ("lat503_p99", "tab:orange", "-", "503 p99")):
            xs = [(t, v) for t, v in zip(s["t"], s[field]) if v is not None]
            if xs:
                lat.plot([x[0] for x in xs], [x[1] for x in xs], color=colour, linestyle=style,
                         label=label, drawstyle="steps-post")
        lat.axhline(25, color="tab:green", linestyle=":", label="202 target 25 ms")
        lat.axhline(10, color="tab:orange", linestyle=":", label="503 target 10 ms")
        lat.set_yscale("log")
        lat.set_ylabel("latency (ms), by due second")
        lat.set_xlabel("time (s from start of offer)")
        lat.legend(fontsize=7, loc="upper right", ncol=2)
    return _save(fig, name)
