"""(fanout) Fan-out at scale: one post to 1k, 10k and 100k followers on PostgreSQL.

* **Raw**: the database's own bulk-insert rate for the same rows - (user_id, post_id,
  created_at) for every follower of the author into ``timeline_entries``, one
  transaction, with psycopg's COPY and with ``executemany`` (pipelined); the faster is
  the reference. Same table, same primary key, index and foreign keys.
* **Chunked**: Floodgate's path. The post and its job are stored, ``fanout_post`` is
  published; ``WORKERS`` ``celery -A config worker -Q fanout`` processes (Floodgate's
  pool, one task at a time each) split the followers into ``FANOUT_CHUNK_SIZE`` chunks
  and deliver them with ``deliver_chunk``. Wall time: from just before the publish to
  the job's ``finished_at`` (state ``succeeded``, the jobs table); every timeline entry
  is then counted.
* **Per follower**: the same with ``FANOUT_CHUNK_SIZE=1``, one task per follower. Run at
  the sizes in ``per_follower_sizes``; where a size is skipped (100k takes long), its
  time is bounded below by the largest measured size's per-follower time times the
  size (each task's cost only grows with the job: chunk count and progress rows),
  and the speed-up given as "at least".

Database ``floodgate_bench_fanout`` (created, then dropped at the end); broker and
results Redis db 10 (bench/env.py).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid

import psycopg

from bench.harness.env import OUT, ROOT, phase_env
from bench.harness.procs import Worker

DB = "floodgate_bench_fanout"
ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG = f"postgresql://postgres@127.0.0.1:5432/{DB}"
SA_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB}"
LIMITS = "fanout=250000,aggregation=100,default=5000"
SIZES = (1_000, 10_000, 100_000)
FANOUT_TASK = "tasks.fanout.fanout_post"
TARGET_SPEEDUP = 20
TARGET_RAW_SHARE = 0.5


# ---------------------------------------------------------------- database set-up, raw rate

def setup(sizes) -> dict[int, int]:
    """A fresh database: users 1..max(sizes) follow one author per size; returns the authors."""
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    from bench.harness import api_server

    api_server.migrate(SA_URL, dict(os.environ))  # the schema, as a deployment makes it
    top, now = max(sizes), time.time()
    authors = {size: top + k + 1 for k, size in enumerate(sizes)}
    with psycopg.connect(PG) as conn, conn.cursor() as cur:
        with cur.copy("COPY users (id, name, created_at) FROM STDIN") as copy:
            for i in range(1, top + len(sizes) + 1):
                copy.write_row((i, f"user{i}", now))
        with cur.copy("COPY follows (follower_id, followee_id) FROM STDIN") as copy:
            for size, author in authors.items():
                for follower in range(1, size + 1):
                    copy.write_row((follower, author))
        cur.execute("SELECT setval(pg_get_serial_sequence('users', 'id'), %s)",
                    (top + len(sizes),))
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return authors


def drop() -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


def _new_post(cur, author: int) -> int:
    cur.execute("INSERT INTO posts (author_id, text, created_at) VALUES (%s, 'raw', %s) "
                "RETURNING id", (author, time.time()))
    return cur.fetchone()[0]


def raw_rate(author: int, n: int, method: str) -> float:
    """Rows per second inserting the n followers' entries of a new post in one transaction."""
    with psycopg.connect(PG) as conn, conn.cursor() as cur:
        post = _new_post(cur, author)
        conn.commit()
        now = time.time()
        rows = [(u, post, now) for u in range(1, n + 1)]
        start = time.perf_counter()
        if method == "copy":
            with cur.copy("COPY timeline_entries (user_id, post_id, created_at) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
        else:
            cur.executemany("INSERT INTO timeline_entries (user_id, post_id, created_at) "
                            "VALUES (%s, %s, %s)", rows)
        conn.commit()
        return n / (time.perf_counter() - start)


# ---------------------------------------------------------------- the path through Floodgate

def phase_deliver(params: dict) -> dict:
    """In a fresh interpreter (env: this DATABASE_URL, FANOUT_CHUNK_SIZE): store a post and
    its job, publish fanout_post, wait for the job's end; once per size."""
    from sqlalchemy import select

    from config import app
    from tasks.demo import jobs
    from tasks.demo.db import engine
    from tasks.demo.models import jobs as jobs_table
    from tasks.demo.timeline import count_timeline_entries, insert_post

    out = {}
    for size, author in params["runs"]:
        job_id = str(uuid.uuid4())
        with engine().begin() as conn:
            post = insert_post(conn, author, f"fan-out to {size}")
            jobs.create_job(conn, job_id, "fanout", post["post_id"])
        start = time.time()
        app.send_task(FANOUT_TASK, args=(job_id,), task_id=job_id)
        deadline = time.monotonic() + params["timeout_s"]
        row = None
        while time.monotonic() < deadline:
            with engine().connect() as conn:
                row = conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).first()
            if row.state in jobs.FINAL:
                break
            time.sleep(0.02 if size <= 10_000 else 0.1)
        with engine().connect() as conn:
            delivered = count_timeline_entries(conn, post["post_id"]) - 1  # less the author's
        done = row is not None and row.state == jobs.SUCCEEDED
        out[str(size)] = {
            "state": row.state if row else None,
            "wall_s": round(row.finished_at - start, 3) if done else None,
            "chunks": row.chunks_total if row else None,
            "delivered": delivered,
            "rows_per_s": round(size / (row.finished_at - start), 1) if done else None,
        }
    return out


def _phase(params: dict, chunk: int, timeout_s: float) -> dict:
    env = _env(chunk)
    out = OUT / f"phase-fanout-{os.getpid()}-{time.monotonic_ns()}.json"
    argv = [sys.executable, "-m", "bench.harness.phase", "fanout.deliver", json.dumps(params), str(out)]
    with open(OUT / "phase-fanout.log", "ab") as log:
        proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"fan-out phase failed (rc {proc.returncode}); see {OUT}/phase-fanout.log")
    result = json.loads(out.read_text())
    out.unlink()
    return result


def _env(chunk: int) -> dict:
    env = phase_env("redis", LIMITS)
    env.update(DATABASE_URL=SA_URL, FANOUT_CHUNK_SIZE=str(chunk), COMMIT_GRACE_S="10")
    return env


def _purge() -> None:
    from bench.harness.broker import purge

    purge("redis", "fanout")


def measure(mode: str, chunk: int, runs: list, workers: int, timeout_s: float) -> dict:
    """Start the workers, warm them up on the smallest author, then time each run."""
    _purge()
    env = _env(chunk)
    procs = [Worker(env, f"fanout-{mode}-{i}", "fanout", pool=None, concurrency=None)
             for i in range(workers)]
    try:
        warm = runs[0][1]
        _phase({"runs": [[min(s for s, _ in runs), warm]], "timeout_s": 120}, chunk, 300)
        return _phase({"runs": runs, "timeout_s": timeout_s}, chunk, timeout_s * len(runs) + 120)
    finally:
        for p in procs:
            p.stop()
        _purge()


def run(broker: str = "redis", sizes=SIZES, per_follower_sizes=(1_000, 10_000),
        chunk_size: int | None = None, workers: int = 2, raw_reps: int = 3,
        timeout_s: float = 900) -> dict:
    from config.settings import Settings

    chunk = chunk_size or Settings.model_fields["fanout_chunk_size"].default
    sizes = tuple(sorted(sizes))
    authors = setup(sizes)
    try:
        raw = {}
        for size in sizes:
            copy = [raw_rate(authors[size], size, "copy") for _ in range(raw_reps)]
            many = [raw_rate(authors[size], size, "executemany") for _ in range(raw_reps)]
            raw[str(size)] = {"copy_rows_per_s": round(statistics.median(copy), 1),
                              "executemany_rows_per_s": round(statistics.median(many), 1)}
        chunked = measure("chunked", chunk, [[s, authors[s]] for s in sizes], workers, timeout_s)
        pf_sizes = tuple(s for s in sizes if s in set(per_follower_sizes))
        per = measure("per-follower", 1, [[s, authors[s]] for s in pf_sizes], workers,
                      timeout_s) if pf_sizes else {}
    finally:
        drop()
    rows = {}
    measured_pf = [s for s in pf_sizes if per.get(str(s), {}).get("wall_s")]
    per_task_s = (per[str(max(measured_pf))]["wall_s"] / max(measured_pf)) if measured_pf else None
    for size in sizes:
        key = str(size)
        c, p, r = chunked[key], per.get(key), raw[key]
        best_raw = max(r["copy_rows_per_s"], r["executemany_rows_per_s"])
        share = c["rows_per_s"] / best_raw if c.get("rows_per_s") else None
        if p and p.get("wall_s"):
            pf_s, bound = p["wall_s"], False
        else:
            pf_s, bound = (round(per_task_s * size, 1) if per_task_s else None), True
        speedup = pf_s / c["wall_s"] if pf_s and c.get("wall_s") else None
        rows[key] = {"chunked": c, "per_follower": p, "raw": r,
                     "per_follower_s": pf_s, "per_follower_is_lower_bound": bound,
                     "speedup": round(speedup, 1) if speedup else None,
                     "share_of_raw": round(share, 3) if share else None,
                     "all_delivered": c.get("delivered") == size}
    top = rows[str(max(sizes))]
    return {"broker": broker, "sizes": list(sizes), "chunk_size": chunk, "workers": workers,
            "per_follower_sizes": list(pf_sizes), "raw_reps": raw_reps, "results": rows,
            "target_speedup": TARGET_SPEEDUP, "target_raw_share": TARGET_RAW_SHARE,
            "pass_speedup": bool(top["speedup"] and top["speedup"] >= TARGET_SPEEDUP),
            "pass_raw_share": bool(top["share_of_raw"] and top["share_of_raw"] >= TARGET_RAW_SHARE)}


# ---------------------------------------------------------------- report

RERUN = ".venv/bin/python -m bench.run_all --only fanout"


def section(r: dict) -> str:
    lines = [
        "## (fanout) One post to 1k, 10k and 100k followers, PostgreSQL\n",
        __doc__.split("\n", 2)[2].strip(), "",
        f"Chunk size {r['chunk_size']}, {r['workers']} fanout workers (Floodgate's pool, one task "
        f"at a time each), raw rate median of {r['raw_reps']}.", "",
        "| followers | chunked (s) | chunked rows/s | raw COPY rows/s | raw executemany rows/s "
        "| chunked / best raw | one task per follower (s) | speed-up | all delivered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size, row in r["results"].items():
        c, raw = row["chunked"], row["raw"]
        pf = row["per_follower_s"]
        pf_txt = "-" if pf is None else (f">= {pf}" if row["per_follower_is_lower_bound"] else pf)
        sp = row["speedup"]
        sp_txt = "-" if sp is None else (f">= {sp}x" if row["per_follower_is_lower_bound"]
                                         else f"{sp}x")
        lines.append(f"| {int(size):,} | {c.get('wall_s')} | {c.get('rows_per_s')} | "
                     f"{raw['copy_rows_per_s']} | {raw['executemany_rows_per_s']} | "
                     f"{row['share_of_raw']} | {pf_txt} | {sp_txt} | {row['all_delivered']} |")
    ok = {True: "**pass**", False: "**FAIL**"}
    lines += ["", f"Targets at {max(r['sizes']):,}: speed-up >= {r['target_speedup']}x "
              f"{ok[r['pass_speedup']]}; chunked >= {r['target_raw_share']:.0%} of raw "
              f"{ok[r['pass_raw_share']]}.", "",
              f"Rerun: `{RERUN}` (`--fanout-per-follower 1000,10000,100000` to time one task "
              "per follower at 100k too; `--quick`: 1k and 10k only)."]
    if r.get("quick"):
        lines.append("\n_A `--quick` smoke run, not a real measurement._")
    return "\n".join(lines)
