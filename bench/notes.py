"""Method notes and findings about the core code, appended to RESULTS.md."""
from __future__ import annotations

METHOD = """## How the experiments run

* **Apps.** "Guarded" is Floodgate's own app (`config`), whose transports are the guarded
  ones. "Plain" (`bench/plain_app.py`) is Celery's defaults plus JSON serialisation, the
  default kombu transport, one durable queue `bench_plain` without `x-max-length`, and
  publisher confirms on RabbitMQ, so delivery safety equals Floodgate's. In (a) a third app,
  `plain_config`, is Floodgate's whole configuration minus the guard (default transport, no
  `x-max-length`), which separates the guard's own cost from the rest of the configuration.
* **Each phase runs in a fresh interpreter** (`python -m bench.phase`), because settings are
  read once per process; workers are `celery worker` subprocesses in their own process
  group, stopped by PID (SIGTERM, then SIGKILL after 20 s).
* **Bench tasks** (`bench/task_bodies.py`): `bench.sleep` (sleeps 20 ms and records
  `id fg_sent_at start end` in Redis db 10), `bench.noop` (records only the first and last
  tasks of a pre-filled batch), `bench.probe` (readiness). All ignore results, on both apps.
  Wait to start = the task's start minus the `fg_sent_at` header stamped at publish.
* **Submitters** pass their own long-lived producer to `send_task` (`bench/producers.py`),
  because with kombu's pooled producer every refusal costs a reconnect (finding 1), which
  on 2 cores would throttle the offered load and steal CPU from the worker. (a) measures
  the ordinary `send_task` path and the refusal cost both ways.
* **(a)** one thread, `send_task` of 1500 messages per rep to an empty queue with a
  1,000,000 limit, the three apps in rotating order for 5 reps, queue purged between reps,
  no workers; median msg/s and the median of per-rep ratios ("paired").
* **(b)** capacity = tasks/s of one `-P threads -c 2` worker over 20 s with a full queue
  (after 3 s of warm-up). Then open-loop submitters (3 threads, fixed schedule, refusals
  dropped and counted) offer 3x capacity for 60 s, once with `QUEUE_LIMITS=fanout=200` and
  once with `fanout=1000000`. Depth is sampled every 0.25 s. After the offer ends the
  worker gets limit/capacity + 3 s to catch up, then the run is cut: the unguarded run's
  backlog cannot drain in a modest time, so its accepted-but-not-started jobs are reported
  separately, with a p99 that counts them at the wait they had reached at the cut (a lower
  bound). Throughput counts jobs started during the 60 s offer.
* **(c)** a closed population of client threads (`bench/clients.py`): each thinks
  0.5-1.5 s (mean 1 s), then submits one job through `tasks.client.call_with_backoff`
  with `max_attempts=8`, `max_total_s=30` (other arguments default), and loops. The
  population is 3 x capacity x 1 s threads (a few hundred), so its unthrottled demand is 3x
  capacity. A sustained open-loop 3x arrival stream cannot be the test here: two thirds
  of it can never be served, whatever Retry-After says, so every policy ends in give-ups.
  Sleeps go through a tracked, interruptible `sleep=` so the driver knows how many
  clients are waiting; a client still sleeping when the run ends is "in flight", not a
  give-up. *Idle* = time (sampled every 0.1 s) when the queue was empty, no task was
  running on any worker slot, and at least one refused client was waiting. The main run
  first holds the queue just under its limit for 7 s without any refusal, so the meter
  knows the drain rate (an overload already under way); a second, 30 s run starts after
  6 s of light traffic (1 job/s) and a burst of 800 one-shot submissions (a batch job), as
  at the start of a real overload; the burst's refusals are reported separately.
* **(d)** two `-P threads -c 2` workers, `QUEUE_LIMITS=fanout=2s`, open-loop offer of
  1.5 x (2 x one worker's capacity) for 60 s; at 30 s one worker gets SIGTERM (by PID).
  The driver samples depth, the guard's current bound and its cached drain rate every
  0.25 s. "Rate measured" = first sample after the change whose rate is within 10% of the
  drain actually achieved from 10 s after the change. Target window: jobs accepted from
  5 s after the change.
* **(e)** the worker's queue is pre-filled (through an unguarded, unconfirmed publisher;
  not measured), then one worker starts; drain rate = tasks / (last task's end - first
  task's start), from the first and last 300 tasks' own timestamps. Plain candidates run
  once each to pick the fastest; then plain fastest, Floodgate's defaults and the
  proposed change (`-P solo`) are alternated 3 times (median, and the median of per-rep
  ratios). Diagnostics run once each. Every bench worker runs with `--without-mingle
  --without-gossip` (start-up only; nothing in the drain loop).
"""

FINDINGS = """## Findings in core code (not changed here; those files are owned by others)

Measured on the code named at the top. Core commits landed while this bench was being
written (1bfda38: no sent events, task events only while Flower watches, a faster-falling
drain rate; f909bb7: the per-queue prefetch really applied, fanout prefetch 64; later the
fanout prefetch was lowered again, citing these results). They moved several figures;
figures from earlier code are quoted with their commit.

1. **Every refusal reconnects to the broker** (`tasks/brokers/redis.py` `_put` and
   `tasks/brokers/amqp.py` `basic_publish_confirm` raise `QueueFull` inside Celery's
   `with app.producer_or_acquire()`; kombu's `Producer.__exit__` (kombu/messaging.py)
   replaces the pooled connection on *any* exception). Each refusal opens a new connection
   and channel and re-declares the queue: {refusal} per refusal, against {held} when the
   caller's own producer keeps its connection (table in (a)). Under overload, where
   refusals outnumber acceptances 2:1, refusing is the expensive path. Fix, in
   config/celery_app.py - a producer pool whose producers keep their connection when the
   exception is a refusal:

   ```python
   from celery.app.amqp import AMQP
   from kombu import Producer, pools
   from tasks.errors import EtaTooFar, QueueFull

   class _KeepsConnectionOnRefusal(Producer):
       def __exit__(self, exc_type, exc, tb):
           if exc_type is not None and issubclass(exc_type, (QueueFull, EtaTooFar)):
               return self.release()  # the connection is fine; only the message was refused
           return super().__exit__(exc_type, exc, tb)

   class FloodgateAMQP(AMQP):
       @property
       def producer_pool(self):
           if self._producer_pool is None:
               self._producer_pool = pools.ProducerPool(
                   self.app.pool, Producer=_KeepsConnectionOnRefusal, limit=self.app.pool.limit)
           return self._producer_pool

   app = Celery("floodgate", amqp="config.celery_app:FloodgateAMQP", ...)
   ```
   (Checked by swapping that pool in at run time: 9-11 ms -> 1.1-1.4 ms per refusal.)

2. **Messages already prefetched by workers are outside every bound** (tasks/guard.py
   `length_bound`, the Redis admit script and RabbitMQ's `x-max-length` all count ready
   messages only). Wait to start = (ready + reserved) / drain rate, and a `-P threads -c 2`
   worker reserves 2 x PREFETCH. The wait targets of (b) and (d) follow the fanout PREFETCH
   the code had at the time:

   | code | fanout prefetch (effective) | (b) Redis p99 / bound | (b) RabbitMQ p99 / bound | (d) p99 |
   |---|---|---|---|---|
   | 360fa42 | 1 (finding 4) | 2.86 / 2.97 s pass | 2.51 / 2.69 s pass | 2.05 s pass |
   | f909bb7 | 64 | 3.54 / 2.36 s FAIL | 3.55 / 2.37 s FAIL | 3.52 s FAIL |
   | this run | {pf} | {b_redis} | {b_amqp} | {d_p99} |

   (e) wants a deep prefetch (see finding 8), so the lasting fix belongs in the bound, not
   in PREFETCH: workers publish their reserved count per queue with the meter flush
   (`celery.worker.state.reserved_requests`, main process) and the guard admits while
   ready + reserved < bound (Redis: one more key read in `ADMIT_LUA`). RabbitMQ's
   `x-max-length` cannot see reserved messages; there, declare it as the limit minus the
   expected reserved total, or document that a length limit bounds only the ready part.

3. **Retry-After after light traffic is the 60 s maximum for everyone** (tasks/meter.py
   `drain_rate`, tasks/guard.py `retry_after_s`). The rate is averaged over seconds in which
   the queue was not backlogged, so it measures demand, not capacity; 1bfda38's
   `min(window average, last 2 s)` makes a quiet second read as 0, which `retry_after_s`
   treats as unknown (`RETRY_AFTER_MAX_S`). In (c)'s second run (1 job/s for 6 s, then a
   burst of 800 submissions) the burst's refusals got a median Retry-After of {burst_p50} s,
   and the ticket line then stayed at the cap: the population's refusals got a median of
   {cold_p50} s ({cold_60} at 60 s) while a full queue drains in about {drain_s} s; with a warm
   meter they get {warm}. The idle target still passed only because the clients that were
   never refused happened to supply about the drain rate; with fewer clients the workers
   would have idled for most of that minute. Fix: average only seconds in which the worker
   was saturated (the flush can record whether the queue still had messages; one LLEN),
   fall back to a short Retry-After (a few seconds, not 60) while no saturated second has
   been seen, and let the ticket slot fall back to `now + excess/rate` when it is further
   ahead than the current depth justifies.

4. **(Fixed in f909bb7)** The celeryd_init prefetch hook never reached the worker: Celery's
   CLI passes `prefetch_multiplier=1` explicitly and `WorkController.setup_defaults` prefers it
   to the config, so `celery inspect stats` showed `prefetch_count` 2 for `-Q fanout` instead
   of 16. The new consumer bootstep works (`prefetch_count` is now 2 x PREFETCH). One
   leftover: an explicit `--prefetch-multiplier 1` equals the configured default and is
   overridden, so an operator cannot choose 1 for a queue whose PREFETCH is larger.

5. **`call_with_backoff`'s `max_total_s` does not bound the total time** (tasks/client.py).
   tenacity's `stop_after_delay` is checked after an attempt, never before a sleep, so a
   60 s Retry-After with `max_total_s=30` sleeps the full 60-72 s (hint plus up to 20%
   jitter) and then tries again (checked with a fake clock: 61.8 s elapsed for
   `max_total_s=30`). Fix: `stop=stop_after_attempt(max_attempts) |
   stop_before_delay(max_total_s)` (tenacity >= 8.3), or cap each wait at the time left.

6. **Solo pool + small prefetch on RabbitMQ can crawl** (Celery 5.7 behaviour, measured
   with plain Celery while writing this bench: solo `--prefetch-multiplier 1` ~50 tasks/s,
   `4` ~190/s, i.e. ~50 x prefetch_count per second). With the earlier code's effective
   prefetch a Floodgate `-P solo` worker drained ~49 tasks/s with events off and ~5/s with
   events on. With today's code and fanout PREFETCH {e_pf} it does not crawl, but the
   "-P solo (PREFETCH default)" diagnostic in (e) stays at {solo_default} of plain's fastest
   on RabbitMQ: a solo worker needs a deep prefetch.

7. **Task events still cost a lot whenever Flower watches.** They are off by default now
   (1bfda38), but Flower turns them on; the "-E" diagnostic in (e) is the drain rate then.

8. **The exact change for (e).** Floodgate's defaults in this run (prefork, 2 processes,
   fanout PREFETCH {e_pf}, events off, acks_late) reach {e_redis} (Redis) and {e_amqp}
   (RabbitMQ) of plain Celery's fastest configuration (solo, prefetch 64). What closes the
   gap, keeping acks_late, is the pool and a deep prefetch together: `celery -A config worker
   -Q fanout -P solo --prefetch-multiplier 64` - {p_redis} (Redis) and {p_amqp} (RabbitMQ)
   on medians; the per-rep ratios ({pp_redis}, {pp_amqp}) are lower because plain solo's
   own runs spread by +-30% here, so read it as parity within this machine's noise, not a
   margin. The change goes in docker-compose's `worker` command and the Procfile (with
   `default` on a worker of its own). Solo with the current small prefetch is no answer
   (finding 6). Late acks cost nothing measurable ("plain solo p64 with acks_late").
   Two trade-offs, and the first is a conflict today: (1) a deep prefetch keeps its
   messages outside the queue limit, so with it (b) and (d) fail again (finding 2's table:
   prefetch 64 gave p99 3.5 s against bounds of 2.4 s and 2.2 s), so both need finding 2
   fixed first; until then PREFETCH 4 (this run) trades (e) for (b) and (d); (2) the solo
   pool (like threads) does not enforce `task_time_limit`/`soft_time_limit`, which
   Floodgate sets per task; only prefork does.

9. **(a) sits at the noise level of its target.** Three full runs today on comparable code
   (no sent events) gave guarded / plain = 0.951, 0.899 and {a_redis} on Redis and 0.952,
   0.91 and {a_amqp} on RabbitMQ. Against Floodgate's own configuration without the guard
   (`plain_config`) the guard costs 0-5% (this run: {ac_redis} Redis, {ac_amqp} RabbitMQ):
   one EVALSHA over the four priority lists instead of an LPUSH on Redis, nothing measurable
   on RabbitMQ (the broker enforces the limit). What is left of the gap to plain Celery on
   RabbitMQ comes from the rest of the configuration or noise (a follow-up micro-run, 8 x
   400 messages: plain 584, plain_config 556, plain with a Redis result backend 548 msg/s).
"""


def _get(results: dict, key: str, *path, default="?"):
    value = results.get(key)
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


def _wait_row(results: dict, key: str) -> str:
    t = _get(results, key, "targets", default=None)
    if not isinstance(t, dict):
        return "?"
    return f"{t['wait_p99_s']} / {t['wait_bound_s']} s {'pass' if t['wait_pass'] else 'FAIL'}"


def _d_row(results: dict) -> str:
    r = results.get("d_redis")
    return "?" if not r else f"{r['wait_p99_settled_s']} s {'pass' if r['pass'] else 'FAIL'}"


def _drain_s(results: dict) -> str:
    r = results.get("c_redis_trickle") or {}
    cap, limit = r.get("capacity_per_s"), r.get("limit")
    return f"{limit / cap:.1f}" if cap and limit else "?"


def _warm(results: dict) -> str:
    lo, hi = (_get(results, "c_redis", k) for k in ("retry_after_p50_s", "retry_after_max_s"))
    return f"{lo} s" if lo == hi else f"{lo}-{hi} s"


def notes(results: dict) -> str:
    refusal = {b: _get(results, f"a_{key}", "refusal_ms_median", default=None)
               for b, key in (("Redis", "redis"), ("RabbitMQ", "amqp"))}
    found = {b: r for b, r in refusal.items() if isinstance(r, dict)}
    findings = FINDINGS.format(
        refusal=", ".join(f"{r.get('pooled')} ms ({b})" for b, r in found.items()) or "?",
        held=", ".join(f"{r.get('held')} ms ({b})" for b, r in found.items()) or "?",
        burst_p50=_get(results, "c_redis_trickle", "burst_retry_after_p50_s"),
        cold_p50=_get(results, "c_redis_trickle", "retry_after_p50_s"),
        cold_60=_get(results, "c_redis_trickle", "hints_at_max_60s"),
        warm_p50=_get(results, "c_redis", "retry_after_p50_s"),
        warm_max=_get(results, "c_redis", "retry_after_max_s"),
        pf=_get(results, "b_redis", "fanout_prefetch"),
        b_redis=_wait_row(results, "b_redis"), b_amqp=_wait_row(results, "b_amqp"),
        d_p99=_d_row(results),
        e_pf=", ".join(map(str, _get(results, "e_redis", "fanout_prefetch", default=[]))),
        e_redis=_get(results, "e_redis", "ratio"), e_amqp=_get(results, "e_amqp", "ratio"),
        p_redis=_get(results, "e_redis", "proposed_ratio"),
        p_amqp=_get(results, "e_amqp", "proposed_ratio"),
        pp_redis=_get(results, "e_redis", "proposed_ratio_paired"),
        pp_amqp=_get(results, "e_amqp", "proposed_ratio_paired"),
        solo_default=_get(results, "e_amqp", "diagnostics",
                          "floodgate -P solo (PREFETCH default)", "ratio"),
        drain_s=_drain_s(results), warm=_warm(results),
        a_redis=_get(results, "a_redis", "ratio_vs_plain"),
        a_amqp=_get(results, "a_amqp", "ratio_vs_plain"),
        ac_redis=_get(results, "a_redis", "ratio_vs_plain_config"),
        ac_amqp=_get(results, "a_amqp", "ratio_vs_plain_config"))
    return METHOD + "\n" + findings


NOTES = notes
