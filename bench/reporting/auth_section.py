"""The (auth) section of RESULTS.md, from bench/experiments/exp_auth.py's result."""
from __future__ import annotations

import statistics

from bench.harness.stats import rnd
from bench.reporting.report import table

MICRO_LABELS = {"baseline": "baseline: build the request, await nothing",
                "cached": "valid key, checked in the last AUTH_CACHE_S (cached)",
                "forged": "made-up key (refused by its signed id, no I/O)",
                "missing": "no credential",
                "miss": "valid key not in the cache (one indexed query, in a thread)",
                "plain_200": "FastAPI app: a route without the key check, 200",
                "authed_200_cached": "FastAPI app: the same route with `me: CurrentUser`, "
                                     "cached key, 200",
                "inline_200_cached": "FastAPI app: the same route awaiting "
                                     "`auth.user_key(request)` in its body, cached key, 200",
                "raise_401": "FastAPI app: a route raising the 401 without any check",
                "authed_401_forged": "FastAPI app: `me: CurrentUser`, made-up key, 401",
                "authed_401_missing": "FastAPI app: `me: CurrentUser`, no credential, 401"}
E2E_LABELS = {"refused_key": "POST /posts, valid key, queue full (503)",
              "refused_key_uvicorn": "the same, this code under plain uvicorn (as before "
                                     "api.serve)",
              "refused_before": "the same refusal, code before keys (author in the body)",
              "no_key": "POST /posts without a key (401)",
              "forged_key": "POST /posts with a made-up key (401)",
              "healthz": "GET /healthz (public, cached): the floor"}


def section(r: dict, expect: dict[str, str], fill_limit: int, rerun: str, before: str) -> str:
    """``expect``: the status each end-to-end case should answer; ``rerun``: the command."""
    lines = ["## (auth) Issue 19: what authentication costs per request, and bench (f) with it",
             "",
             (f"Code: {r.get('commit')}. Load average (1, 5, 15 min) at the start "
              f"{r.get('load_start')}, at the end {r.get('load_end')}; 2 cores. Method: the "
              "docstring of bench/experiments/exp_auth.py."), ""]
    for note in r.get("notes", []):
        lines += [f"Note: {note}", ""]
    lines += _summary_md(r)
    lines += _micro_md(r.get("micro"))
    lines += _app_md(r.get("app"))
    lines += _e2e_md(r.get("e2e"), expect, fill_limit)
    lines += _expiry_md(r.get("expiry"))
    lines += _f_ab_md(r.get("f_ab"))
    lines += _f_full_md(r.get("f_full"))
    lines.append(f"Rerun: `{rerun}` (about 20 minutes; `--quick` for a smoke run; "
                 "`--auth-parts micro,app,e2e,expiry` for the parts without (f), about 6 "
                 "minutes). (f) side by side alone: `python -m bench.experiments.exp_f_ab --refs "
                 f"worktree,{before} --rounds 3 --duration 20`.")
    return "\n".join(lines)


def _summary_md(r: dict) -> list[str]:
    """The figures the issue asks for, in one list (each from a table below)."""
    out = []
    m = (r.get("micro") or {}).get("cases", {})
    if m:
        out.append(f"* The key check itself, per request: {m['cached']['net_us']} µs with a "
                   f"cached key, {m['forged']['net_us']} µs to refuse a made-up one, "
                   f"{m['missing']['net_us']} µs without a credential, "
                   f"{m['miss']['median_us']:.0f} µs when the key is not cached (one query); "
                   f"wired into a FastAPI route as a dependency, "
                   f"{m['authed_200_cached']['net_us']} µs (cached key)"
                   + (f", awaited in the route's body instead, {m['inline_200_cached']['net_us']}"
                      " µs" if "inline_200_cached" in m else "") + ".")
    a = r.get("app") or {}
    if a.get("now refused") and a.get("before refused"):
        now, old = a["now refused"]["median_us"], a["before refused"]["median_us"]
        out.append(f"* The whole app's refusal in process: {now} µs with keys, {old} µs "
                   f"before ({rnd(now / old, 2)}x).")
    e = (r.get("e2e") or {}).get("cases", {})
    if e.get("refused_key") and e.get("refused_before"):
        out.append(f"* End to end, API CPU per refusal: {e['refused_key']['api_cpu_us_per_answer']}"
                   f" µs with keys, {e['refused_before']['api_cpu_us_per_answer']} µs before; "
                   f"a request without a key costs {e['no_key']['api_cpu_us_per_answer']} µs, "
                   f"GET /healthz {e['healthz']['api_cpu_us_per_answer']} µs.")
    f = r.get("f_ab")
    if f:
        now, old = f["refs"]

        def both(key: str) -> str:
            (mn, sn), (mo, so) = ((f["medians"][ref][key], f["spreads"][ref][key])
                                  for ref in (now, old))
            return f"{mn} ({sn[0]} - {sn[1]}) vs {mo} ({so[0]} - {so[1]})"

        out.append(f"* Bench (f) side by side, {now} vs {old}, medians (min - max) of "
                   f"{f['rounds']}: at 10x, 503 p50 {both('x10 lat_503_p50_ms')} ms, 503 p99 "
                   f"{both('x10 lat_503_p99_ms')} ms, 202 p99 {both('x10 lat_202_p99_ms')} ms, "
                   f"completed / drain alone {both('x10 completion_vs_drain_alone')}; at 3x, "
                   f"503 p99 {both('x3 lat_503_p99_ms')} ms; API CPU per refusal "
                   f"{both('api_cpu_ms_per_refusal')} ms.")
    return out + [""] if out else []


def _micro_md(m: dict | None) -> list[str]:
    if not m:
        return []
    rows = [[MICRO_LABELS.get(case, case), v["median_us"], f"{v['min_us']} - {v['max_us']}",
             "-" if v["net_us"] is None else v["net_us"], v.get("net_of") or "-"]
            for case, v in m["cases"].items()]
    return ["### In process: api/auth.py's dependency (`auth.user_key`), and through FastAPI",
            "",
            (f"{m['reps']} repetitions of {m['calls_per_rep']} calls per case "
             f"({m['calls_per_rep_miss']} for the cache miss, {m['calls_per_rep_app']} per "
             "FastAPI case: an ASGI call of a small app holding the real dependency and the "
             f"API's 401 handler, no server, no socket), interleaved; {m['database']}; load "
             f"average {m['load_before']} before, {m['load_after']} after. \"Net\" subtracts "
             "the row named in its column: what the key check adds."), "",
            table(["case", "µs per call (median)", "min - max of reps", "net (µs)", "net of"],
                  rows), ""]


def _app_md(a: dict | None) -> list[str]:
    if not a:
        return []
    rows = [[key.replace("now", "with keys", 1).replace("before", a["before"], 1),
             v["median_us"], f"{v['min_us']} - {v['max_us']}", v["status"]]
            for key, v in a.items() if isinstance(v, dict) and "median_us" in v]
    out = ["### In process: the whole app's refused POST /posts, with keys and before them", "",
           (f"An ASGI call of the real `api.main.app` (middleware, routing, dependencies, "
            "body, the 503 handler; no server, no socket), its guard's memory of the "
            "broker's refusal replaced by raising the same QueueFull; each code in a fresh "
            f"interpreter, alternated, {a['rounds']} runs of 5 x {a['calls']} calls; the "
            "median of the runs' medians. cProfile of one run of each: "
            f"{', '.join(a['profiles'].values())} (bench/out, not kept)."), "",
           table(["code, request", "µs per call", "min - max of runs", "status"], rows)]
    now, old = a.get("now refused"), a.get("before refused")
    if now and old:
        out += ["", (f"With keys / before: {rnd(now['median_us'] / old['median_us'], 3)} "
                     f"({rnd(now['median_us'] - old['median_us'], 1)} µs more per refusal).")]
    return out + [""]


def _e2e_md(e: dict | None, expect: dict[str, str], fill_limit: int) -> list[str]:
    if not e:
        return []
    rows = [[E2E_LABELS.get(case, case), v["serial_p50_ms"], v["serial_p99_ms"],
             v["parallel_per_s"], v["parallel_p99_ms"], v["api_cpu_us_per_answer"],
             f"{v['api_cpu_us_spread'][0]} - {v['api_cpu_us_spread'][1]}",
             f"{v['expected_status_share']:.2%} {expect[case]}"]
            for case, v in e["cases"].items()]
    ratios = [[name, med, f"{lo} - {hi}"] for name, (med, lo, hi) in e["ratios"].items()]
    return ["### End to end: API processes on the real Redis broker, loopback only", "",
            (f"`{e['api_command']}`; fanout limit {fill_limit}. Each round the worker drains "
             "the queue (the drain rate is measured), stops, and the queue is filled again, so "
             "every post is refused, mostly in process as in bench (f) (drain, then the fill's "
             f"answers, per round: {e['fill']}). {e['rounds']} rounds; per case "
             f"and round, 1 connection back to back for {e['serial_s']} s (latency), then "
             f"{e['conns']} connections for {e['parallel_s']} s (throughput and the API "
             "process's CPU per answer); the load generator runs in a process of its own on "
             f"the same 2 cores. Code before keys: {e['before']}. Load average per round: "
             f"{e['load_per_round']}."), "",
            table(["case", "p50 (ms), 1 conn", "p99 (ms), 1 conn", "answers/s, 16 conns",
                   "p99 (ms), 16 conns", "API CPU per answer (µs)", "its min - max",
                   "expected status"], rows),
            "", "Ratios, each round side by side, then the median (min - max) over rounds:", "",
            table(["ratio", "median", "min - max"], ratios), ""]


def _expiry_md(x: dict | None) -> list[str]:
    if not x:
        return []

    def med(runs: list[dict], key: str) -> float | None:
        values = [r["summary"][key] for r in runs if r["summary"][key] is not None]
        return rnd(statistics.median(values), 2) if values else None

    rows = [[cache_s, *(med(runs, k) for k in ("503_p50_ms", "503_p99_ms",
                                               "per_second_p99_median_ms",
                                               "per_second_p99_max_ms", "api_cpu_us_per_answer")),
             runs[0]["per_second_p99_ms"]] for cache_s, runs in x["runs"].items()]
    return ["### When a cached key ages: AUTH_CACHE_S as set, and long", "",
            (f"One API process per setting, beside each other (alternated, {x['rounds']} "
             f"rounds); the queue full, {x['rate_per_s']:g} posts/s offered open loop for "
             f"{x['duration_s']:g} s from {x['keys']} accounts round robin (as bench (f) "
             "posts), each with its own key. With AUTH_CACHE_S as set, a key in use is read "
             "again in the background every AUTH_CACHE_S / 2; a long one is never read again "
             "during the offer. Medians over rounds."), "",
            table(["AUTH_CACHE_S", "503 p50 (ms)", "503 p99 (ms)", "per-second p99: median (ms)",
                   "per-second p99: max (ms)", "API CPU per answer (µs)",
                   "per-second p99 of the first round (ms)"], rows), ""]


def _f_ab_md(f: dict | None) -> list[str]:
    if not f:
        return []
    now, before = f["refs"]
    mn, mb = f["medians"][now], f["medians"][before]
    sn, sb = f["spreads"][now], f["spreads"][before]
    rows = [[key, mn[key], f"{sn[key][0]} - {sn[key][1]}", mb[key],
             f"{sb[key][0]} - {sb[key][1]}", rnd(mn[key] / mb[key], 3) if mb[key] else "-"]
            for key in mn if key not in ("load_1min", "others_cores_x10") and key in mb]
    return ["### Bench (f) side by side: the work tree (API keys) and the code before them", "",
            (f"Stack {f['stack']}; {f['rounds']} rounds, the order flipped each round; "
             f"{f['duration_s']} s per overload phase, 5 s for item 4. Load average (1 min) at "
             f"the end of each run: now {[r['load_1min'] for r in f['runs'][now]]}, before "
             f"{[r['load_1min'] for r in f['runs'][before]]}."), "",
            table(["measure", f"{now}: median", "min - max", f"{before}: median", "min - max",
                   "ratio of medians"], rows), ""]


def _f_full_md(f: dict | None) -> list[str]:
    if not f:
        return []
    rec = f["recorded"] or {}
    rows = [[label, value, rec.get(label, "-")] for label, value in f["now"].items()]
    return ["### Bench (f) full length (60 s phases), make-up, beside the run recorded before", "",
            (f"Now: {f['now_commit']} ({f['now_auth']}), load average {f['load_before']} before, "
             f"{f['load_after']} after; processes outside the stack during 10x: "
             f"{f['others_cores_x10']} cores. Recorded: "
             f"{f['recorded_commit'] or 'none found'} (section (f) above, a different session "
             "and machine state; the side-by-side runs are the fair comparison)."), "",
            table(["measure", "now", "recorded before"], rows), ""]
