"""Bench (g)'s plot and its section of bench/RESULTS.md, from a result of exp_g.run."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.harness.env import PLOTS  # noqa: E402

STACK_NAMES = {"make-up": "make up's stack (Valkey + embedded PostgreSQL)",
               "prod": "the RabbitMQ stack (RabbitMQ + PostgreSQL + Redis results)"}
MODE_NAMES = {"fair": "fair admission", "first_come": "first come"}


def plot(r: dict) -> str:
    """Depth over time in the first shares phase of each mode, and the figures side by side."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for mode, colour in (("fair", "tab:green"), ("first_come", "tab:red")):
        runs = r.get(mode, {}).get("shares") or []
        if runs and runs[0].get("series"):
            pts = [(t, d) for t, d in runs[0]["series"]["depth"] if d is not None]
            axes[0].plot([t for t, _ in pts], [d for _, d in pts], color=colour,
                         label=MODE_NAMES[mode], lw=1)
    axes[0].axhline(r["limit"], color="k", ls="--", lw=0.8, label="limit")
    axes[0].set(title="queue depth, noisy + 3 polite (run 1)", xlabel="s", ylabel="messages")
    axes[0].legend(fontsize=8)
    labels = [MODE_NAMES[m] for m in ("fair", "first_come")]
    med = [r.get(m, {}).get("medians", {}) for m in ("fair", "first_come")]
    x = range(2)
    axes[1].bar([i - 0.2 for i in x], [100 * (m.get("polite_first_try") or 0) for m in med],
                0.4, label="polite: first try accepted %")
    axes[1].bar([i + 0.2 for i in x], [100 * (m.get("critical_first_try") or 0) for m in med],
                0.4, label="critical, under a sheddable flood: first try accepted %")
    axes[1].axhline(99, color="k", ls="--", lw=0.8)
    axes[1].set(xticks=list(x), xticklabels=labels, ylim=(0, 130), title="acceptance (medians)")
    axes[1].legend(fontsize=7, loc="upper right")
    fair = med[0]
    on, off = fair.get("throttle_on") or {}, fair.get("throttle_off") or {}
    vals = [(off.get("requests_per_offered_post") or 0, on.get("requests_per_offered_post") or 0),
            ((off.get("api_cpu_us_per_offered_post") or 0) / 100,
             (on.get("api_cpu_us_per_offered_post") or 0) / 100)]
    axes[2].bar([-0.2, 0.8], [v[0] for v in vals], 0.4, label="throttle=None")
    axes[2].bar([0.2, 1.2], [v[1] for v in vals], 0.4, label="throttle on (default)")
    axes[2].set(xticks=[0, 1], xticklabels=["requests to the API\nper offered post",
                                            "API CPU per offered\npost (100 us)"],
                title="self-throttling clients at 10x (fair)")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"(g) the noisy neighbour: {STACK_NAMES.get(r['stack'], r['stack'])}, "
                 f"limit {r['limit']}", fontsize=10)
    PLOTS.mkdir(parents=True, exist_ok=True)
    name = f"g_{r['stack']}.png"
    fig.tight_layout()
    fig.savefig(PLOTS / name, dpi=80)
    plt.close(fig)
    return f"plots/{name}"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _v(v, unit: str = "") -> str:
    return "–" if v is None else f"{v:g}{unit}"


def _ok(value, target, above: bool = True) -> str:
    if value is None or target is None:
        return ""
    return " ✓" if (value >= target if above else value <= target) else " ✗"


HEAD = """## (g) the noisy neighbour

Issue 20 item 5, through HTTP on whole stacks (`python -m config.up`), each started
twice: `FAIR_ADMISSION=true` (fair shares per tenant, criticality classes) and
`FAIR_ADMISSION=false` (first come, first served), the same code. A tenant is a user;
each post's author has 400 followers (one fan-out chunk), and the worker's drain alone is
measured first. **Shares**: one tenant offers 10× the drain in a closed loop that
ignores Retry-After; three polite tenants offer 0.1× each (Poisson) and obey it.
**Criticality**: one tenant floods `sheddable` posts at 10×, a user in `CRITICAL_USERS`
posts `critical` at 0.2×. **Self-throttling** (fair only): two clients of the library's
`post_with_backoff` at 5× each (10× in all, 3 attempts, 2 s), its throttle on (default)
against `throttle=None`. Wait = GET /jobs' `started_at − submitted_at`; busy = the union
of the jobs' run intervals over the phase (after 3 s); depth sampled at 10 Hz from the
broker. Medians of the runs. Method: `bench/experiments/exp_g.py`."""


def section(r: dict) -> str:
    head = HEAD + "\n\n" if r["stack"] == "make-up" else ""
    f, c = r["fair"]["medians"], r["first_come"]["medians"]
    t = r["targets"]
    bound = f.get("wait_bound_s")
    rows = [
        ("drain alone (jobs/s)", _v(r["fair"].get("drain_rate_per_s")),
         _v(r["first_come"].get("drain_rate_per_s")), ""),
        ("polite posts accepted at the first try", _pct(f["polite_first_try"]) +
         _ok(f["polite_first_try"], t["polite_first_try"]), _pct(c["polite_first_try"]) +
         _ok(c["polite_first_try"], t["polite_first_try"]), "≥ 99 %"),
        ("polite posts accepted within 4 attempts", _pct(f["polite_accepted"]),
         _pct(c["polite_accepted"]), ""),
        ("polite accepted jobs' p99 wait", _v(f["polite_wait_p99_s"], " s") +
         _ok(f["polite_wait_p99_s"], f.get("wait_bound_s"), False),
         _v(c["polite_wait_p99_s"], " s") + _ok(c["polite_wait_p99_s"], c.get("wait_bound_s"),
                                                 False),
         f"≤ 1.1 × limit ÷ drain ({_v(bound, ' s')} fair, {_v(c.get('wait_bound_s'), ' s')})"),
        ("queue not empty (share of depth samples): the worker never waits for work",
         _v(f.get("queue_nonempty")) + _ok(f.get("queue_nonempty"), t["busy"]),
         _v(c.get("queue_nonempty")) + _ok(c.get("queue_nonempty"), t["busy"]), "≥ 0.9"),
        ("worker busy (union of the jobs' run intervals)", _v(f["worker_busy"]) +
         _ok(f["worker_busy"], t["busy"]), _v(c["worker_busy"]) + _ok(c["worker_busy"], t["busy"]),
         "≥ 0.9"),
        ("completions ÷ drain alone", _v(f["completion_vs_drain"]), _v(c["completion_vs_drain"]),
         ""),
        ("queue depth max (all runs)", _v(f["depth_max"]) + _ok(f["depth_max"], r["limit"], False),
         _v(c["depth_max"]) + _ok(c["depth_max"], r["limit"], False), f"≤ {r['limit']}"),
        ("noisy tenant: attempts / share accepted", f"{_v(f['noisy_attempts'])} / "
         f"{_pct(f['noisy_accepted_share'])}", f"{_v(c['noisy_attempts'])} / "
         f"{_pct(c['noisy_accepted_share'])}", ""),
        ("API CPU per attempt (shares phase)", _v(f["api_cpu_us_per_attempt"], " µs"),
         _v(c["api_cpu_us_per_attempt"], " µs"), ""),
        ("critical posts accepted at the first try, sheddable flood at 10×",
         _pct(f["critical_first_try"]) + _ok(f["critical_first_try"], t["critical"]),
         _pct(c["critical_first_try"]) + _ok(c["critical_first_try"], t["critical"]), "≥ 99 %"),
        ("critical posts accepted within 4 attempts", _pct(f["critical_accepted"]),
         _pct(c["critical_accepted"]), ""),
        ("critical jobs' p99 wait", _v(f["critical_wait_p99_s"], " s"),
         _v(c["critical_wait_p99_s"], " s"), ""),
        ("queue depth max under the sheddable flood", _v(f["criticality_depth_max"]),
         _v(c["criticality_depth_max"]), f"sheddable stops at {r['limit'] // 2} (fair)"),
    ]
    table = "\n".join(f"| {a} | {b} | {cc} | {d} |" for a, b, cc, d in rows)
    on, off = f.get("throttle_on") or {}, f.get("throttle_off") or {}
    throttle = ""
    if on and off:
        throttle = f"""

Self-throttling clients at 10× (fair admission; medians of {len(r['fair']['throttle_on'])} runs each, alternated):

| | throttle on (default) | `throttle=None` |
|---|---|---|
| posts offered | {_v(on['offered_posts'])} | {_v(off['offered_posts'])} |
| requests that reached the API (per offered post) | {_v(on['requests_to_api'])} ({_v(on['requests_per_offered_post'])}) | {_v(off['requests_to_api'])} ({_v(off['requests_per_offered_post'])}) |
| refusals (503) the API sent | {_v(on['refusals_to_api'])} | {_v(off['refusals_to_api'])} |
| accepted (202) | {_v(on['accepted'])} | {_v(off['accepted'])} |
| API CPU per offered post | {_v(on['api_cpu_us_per_offered_post'], ' µs')} | {_v(off['api_cpu_us_per_offered_post'], ' µs')} |
| API process's CPU share | {_v(on['api_cpu_share'])} | {_v(off['api_cpu_share'])} |
| clients' own CPU (s) | {_v(on['client_cpu_s'])} | {_v(off['client_cpu_s'])} |
| posts offered per second (target {_v(r['fair'].get('drain_rate_per_s') and round(10 * r['fair']['drain_rate_per_s']))}) / p99 start lag | {_v(on.get('offered_rate_per_s'))} / {_v(on['start_lag_p99_s'], ' s')} | {_v(off.get('offered_rate_per_s'))} / {_v(off['start_lag_p99_s'], ' s')} |"""
    quick = "\n\n_A `--quick` smoke run, not a real measurement._" if r.get("quick") else ""
    notes = misses(r)
    return f"""{head}### (g) {STACK_NAMES.get(r['stack'], r['stack'])}, limit {r['limit']}

{r['reps']} runs per configuration; phases of {r['phase_s']['shares']:g} s (shares),
{r['phase_s']['criticality']:g} s (criticality), {r['phase_s']['throttle']:g} s (throttle);
commit {r['commit']}.

| | fair admission | first come | target |
|---|---|---|---|
{table}{throttle}

{notes}

![(g)]({r['plot']})

Rerun: `python -m bench.experiments.exp_g --stack {r['stack']}`{quick}"""


def misses(r: dict) -> str:
    """The targets fair admission missed here, each with the figures that say why."""
    f, t = r["fair"]["medians"], r["targets"]
    c = r["first_come"]["medians"]
    others = [rep.get("others_cores") for m in ("fair", "first_come")
              for rep in r[m].get("calibration", {}).get("reps", [])
              if rep.get("others_cores") is not None]
    beside = (f"other processes on the machine used {min(others):g}–{max(others):g} cores "
              "while the drain was measured" if others else "")
    out = []
    if f["polite_wait_p99_s"] is not None and f["polite_wait_p99_s"] > f["wait_bound_s"]:
        out.append(
            f"**Missed: the polite jobs' p99 wait** ({f['polite_wait_p99_s']:g} s against "
            f"{f['wait_bound_s']:g} s). The bound divides by the drain measured alone; under "
            f"the 10× offer the worker completed {f['completion_vs_drain']:g} of that (the API "
            "answering the noisy tenant shares the 2 cores with the niced worker"
            + (f"; {beside}" if beside else "") + "), and the queue held the noisy tenant's "
            "share up to the watermark plus what the polite tenants were waiting for, so a "
            "wait is that depth over the slower drain."
            + (f" First come's p99 wait was {c['polite_wait_p99_s']:g} s."
               if c.get("polite_wait_p99_s") is not None else ""))
    if f["worker_busy"] is not None and f["worker_busy"] < t["busy"]:
        out.append(
            f"**Missed as measured by run intervals: worker busy {f['worker_busy']:g}** "
            f"(first come: {r['first_come']['medians']['worker_busy']:g}). The queue was never "
            f"empty ({_v(f.get('queue_nonempty'))} of the samples), so the worker never waited "
            "for work: the noisy tenant took the capacity the polite ones left. The union of "
            "`started_at..finished_at` leaves out each task's first steps (it reads its job, "
            "the post and the followers before it marks itself started) and the worker's "
            "taking and acking of messages, which grow when it is short of CPU; it is alike "
            "in both modes.")
    if f["polite_first_try"] is not None and f["polite_first_try"] < t["polite_first_try"]:
        out.append(f"**Missed: polite first-try acceptance** ({_pct(f['polite_first_try'])}).")
    on, off = f.get("throttle_on") or {}, f.get("throttle_off") or {}
    if on and off and (off.get("not_offered_client_saturated") or 0) > 0:
        out.append(
            f"**The plain-backoff clients could not offer 10×**: {_v(off.get('offered_rate_per_s'))} "
            f"posts/s against {_v(on.get('offered_rate_per_s'))} with the throttle (posts more "
            "than 1 s late were dropped: the clients' own CPU, every attempt a real HTTP "
            "request, on 2 shared cores). Compare per offered post.")
    return "\n\n".join(out)
