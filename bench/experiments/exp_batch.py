"""(batch) Batch submission vs one publish per job, no workers.

Each rep publishes ``n`` no-op jobs to the empty ``fanout`` queue (limit 1,000,000)
of Floodgate's app from one thread, both ways, in alternating order:

* single - ``app.send_task`` per job (what ``.delay()`` does): one broker round trip
  each (Redis: admit.lua; RabbitMQ: publish, then wait for its confirm).
* batch  - ``celery_floodgate.batch.submit_many`` with ``batch`` jobs per call
  (Redis: one admit_many.lua call per call; RabbitMQ: all published, confirms
  awaited once).
* 4 threads - four publishers, ``send_task`` per job each, each on its own pooled
  connection waiting for its own confirm (for item 2: what concurrency gives without
  shared confirms).

Then a limit check: the queue is filled to ``limit - 100`` and 8 threads each send a
batch of 100 at once; exactly 100 must be admitted, the rest refused and reported.
"""
from __future__ import annotations

import threading
import time

from bench.harness import broker as brokers
from bench.harness.driver import floodgate_app
from bench.harness.procs import run_phase
from bench.harness.stats import median, rnd

TARGET = 5.0
TASK = "bench.noop"
EXACT_LIMIT = 2000


def _single(app, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        app.send_task(TASK, args=(i, n, 0), queue="fanout", ignore_result=True)
    return n / (time.perf_counter() - start)


def _threads(app, n: int, threads: int = 4) -> float:
    """``threads`` publishers, one send_task per job each (each holds a pooled connection
    and waits for its own confirm): what concurrency alone gives, without shared confirms."""
    per = n // threads
    barrier = threading.Barrier(threads + 1)

    def one():
        barrier.wait()
        for i in range(per):
            app.send_task(TASK, args=(i, n, 0), queue="fanout", ignore_result=True)

    pool = [threading.Thread(target=one) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    return per * threads / (time.perf_counter() - start)


def _batch(app, n: int, size: int) -> float:
    from celery_floodgate.batch import submit_many

    start = time.perf_counter()
    for first in range(0, n, size):
        r = submit_many(app, TASK, [(i, n, 0) for i in range(first, min(n, first + size))],
                        queue="fanout", ignore_result=True)
        assert not r.refused, r.refused[:1]
    return n / (time.perf_counter() - start)


def phase_publish(params: dict) -> dict:
    import os

    broker, n, reps, size = os.environ["BENCH_BROKER"], params["n"], params["reps"], params["batch"]
    app = floodgate_app()
    _single(app, 200)
    _batch(app, 200, size)
    brokers.purge(broker, "fanout")
    rates = {"single": [], "batch": [], "single_4_threads": []}
    ways = {"single": lambda: _single(app, n), "batch": lambda: _batch(app, n, size),
            "single_4_threads": lambda: _threads(app, n)}
    for rep in range(reps):
        order = list(ways)[rep % 3:] + list(ways)[:rep % 3]
        for way in order:
            rates[way].append(ways[way]())
            brokers.purge(broker, "fanout")
    return {"rates": rates}


def phase_exact(params: dict) -> dict:
    """Fill to limit - 100, then 8 concurrent batches of 100."""
    import os

    from celery_floodgate.batch import submit_many

    broker = os.environ["BENCH_BROKER"]
    app = floodgate_app()
    brokers.purge(broker, "fanout")
    filled = submit_many(app, TASK, [(i, 0, 0) for i in range(EXACT_LIMIT - 100)],
                         queue="fanout", ignore_result=True)
    barrier, results = threading.Barrier(8), []

    def one():
        barrier.wait()
        results.append(submit_many(app, TASK, [(i, 0, 0) for i in range(100)], queue="fanout",
                                   ignore_result=True))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    depth = brokers.Depth(broker, "fanout")()
    brokers.purge(broker, "fanout")
    return {"filled": len(filled.accepted), "accepted": sum(len(r.accepted) for r in results),
            "refused": sum(len(r.refused) for r in results), "depth": depth,
            "retry_after_s": sorted({r.retry_after_s for r in results if r.refused})}


def run(broker: str, n: int = 5000, reps: int = 7, batch: int = 500) -> dict:
    brokers.reset(broker)
    raw = run_phase("batch.publish", broker, "fanout=1000000,aggregation=100,default=5000",
                    {"n": n, "reps": reps, "batch": batch})
    rates = raw["rates"]
    brokers.reset(broker)  # RabbitMQ: the queue is re-declared with the smaller x-max-length
    exact = run_phase("batch.exact", broker, f"fanout={EXACT_LIMIT},aggregation=100,default=5000",
                      {})
    med = {k: median(v) for k, v in rates.items()}
    paired = median([b / s for b, s in zip(rates["batch"], rates["single"])])
    ratio = med["batch"] / med["single"]
    return {"broker": broker, "n": n, "reps": reps, "batch": batch,
            "median_rate": {k: rnd(v, 1) for k, v in med.items()},
            "rates": {k: [rnd(x, 1) for x in v] for k, v in rates.items()},
            "ratio": rnd(ratio), "ratio_paired": rnd(paired), "target": TARGET,
            "pass": ratio >= TARGET, "exact": exact,
            "pass_exact": exact["accepted"] == 100 and exact["depth"] == EXACT_LIMIT
            and exact["refused"] == 700}


RERUN = ".venv/bin/python -m bench.run_all --only batch --broker {broker}"

SHARED_CONFIRMS = """**Shared confirms for concurrent single publishers (issue 10 item 2, RabbitMQ): not
implemented.** In kombu's pool each publishing thread holds a connection of its own, with
one channel, and py-amqp's `basic_publish_confirm` blocks that thread until its own
ack. Confirms belong to a channel, so only publishes on one channel can share them, and a
py-amqp connection is not thread-safe: sharing needs one I/O thread per process that owns
the channel, takes every caller's message, publishes them back to back and resolves each
caller's future from the acks/nacks by delivery tag (`multiple=True` included). What it
would take, in `transports/amqp.py`: (1) that thread, restarted after every fork (prefork
workers, API processes); (2) `basic_publish_confirm` replaced by a hand-off to it, keeping
QueueFull per nack and BrokerUnavailable on a timeout - but a lost connection then fails
every caller in flight with an unknown outcome, not one; (3) a bound on pending callers
while the broker is blocked (memory alarm); (4) green futures under eventlet/gevent pools,
where a blocking hand-off to a thread stalls the hub. The gain is bounded by the
"4 threads" row above: concurrent publishers already overlap their round trips on separate
connections, so what sharing would save is the per-confirm work (client CPU, one frame per
message), not the wait. A caller with many jobs gets the whole gain today from
`submit_many` (the batch row: one confirm wait per batch, no thread, no new failure mode),
so single submissions keep one confirm each.
"""


def section(r: dict) -> str:
    ok = {True: "**pass**", False: "**FAIL**"}
    m, e = r["median_rate"], r["exact"]
    head = "## (batch) Batch submission vs one publish per job\n\n" + \
        __doc__.split("\n", 2)[2].strip() + "\n\n" if r["broker"] == "redis" else ""
    quick = "\n\n_A `--quick` smoke run, not a real measurement._" if r.get("quick") else ""
    return f"""{head}### (batch) {r['broker']}

| way | median jobs/s | reps (jobs/s) |
|---|---|---|
| single (`send_task` per job) | {m['single']} | {', '.join(map(str, r['rates']['single']))} |
| batch of {r['batch']} (`submit_many`) | {m['batch']} | {', '.join(map(str, r['rates']['batch']))} |
| 4 threads, `send_task` per job | {m.get('single_4_threads')} | {', '.join(map(str, r['rates'].get('single_4_threads', [])))} |

batch / single = **{r['ratio']}** (paired per rep {r['ratio_paired']}), {r['n']} jobs per rep,
{r['reps']} reps. Target >= {r['target']:g}x: {ok[r['pass']]}.

Limit check (limit {EXACT_LIMIT}, filled to {e['filled']}, 8 concurrent batches of 100):
{e['accepted']} admitted, {e['refused']} refused and reported, depth {e['depth']}
(Retry-After {e['retry_after_s']} s): {ok[r['pass_exact']]}.

{SHARED_CONFIRMS if r['broker'] == 'amqp' else ''}
Rerun: `{RERUN.format(broker=r['broker'])}`{quick}"""
