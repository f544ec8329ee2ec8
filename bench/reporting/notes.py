"""Method notes and findings about the core code, appended to RESULTS.md."""
from __future__ import annotations

METHOD = """## How the experiments run

* **Apps.** "Guarded" is Floodgate's own app (`config`), whose transports are the guarded
  ones. "Plain" (`bench/plain_app.py`) is Celery's defaults plus JSON serialisation, the
  default kombu transport, one durable queue `bench_plain` without `x-max-length`, and
  publisher confirms on RabbitMQ, so delivery safety equals Floodgate's. In (a) a third app,
  `plain_config`, is Floodgate's whole configuration minus the guard (default transport, no
  `x-max-length`), which separates the guard's own cost from the rest of the configuration.
* **Each phase runs in a fresh interpreter** (`python -m bench.harness.phase`), because settings are
  read once per process; workers are `celery worker` subprocesses in their own process
  group, stopped by PID (SIGTERM, then SIGKILL after 20 s).
* **Bench tasks** (`bench/task_bodies.py`): `bench.sleep` (sleeps 20 ms and records
  `id fg_sent_at start end` in Redis db 10), `bench.noop` (records only the first and last
  tasks of a pre-filled batch), `bench.probe` (readiness). All ignore results, on both apps.
  Wait to start = the task's start minus the `fg_sent_at` header stamped at publish.
* **Submitters** pass their own long-lived producer to `send_task` (`bench/producers.py`),
  as a service would hold one; (a) measures the ordinary `send_task` path, and the
  refusal cost both ways (finding 1).
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
  0.5-1.5 s (mean 1 s), then submits one job through `celery_floodgate.call_with_backoff`
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
  same worker with `-P prefork` are alternated 5 times (median, and the median of per-rep
  ratios). Diagnostics run once each. Every bench worker runs with `--without-mingle
  --without-gossip` (start-up only; nothing in the drain loop).
"""

FINDINGS = """## Findings, and what became of them

Earlier runs of this bench found the defects below in the core code; each is now fixed
or stated as a limit. Figures are from this run unless a commit is named.

1. **A refusal reconnected to the broker** (kombu's `Producer.__exit__` replaces a pooled
   connection on any exception). Fixed: `lib/src/celery_floodgate/transports/producers.py` keeps the connection
   when the exception is a refusal (`celery_floodgate.Refused`). Cost of one refusal through
   `send_task`'s pooled producer now: {refusal}, against {held} with a producer the caller
   holds (before the fix: 15.2 ms Redis, 8.5 ms RabbitMQ).

2. **Messages prefetched by workers were outside every bound.** Wait to start = (ready +
   prefetched) / drain rate. Fixed on Redis: every worker reports its prefetch window per
   queue with the meter flush, and the admit script's bound is the limit less the live
   workers' windows (never below half the limit; `lib/src/celery_floodgate/guard.py` `room_in_broker`). On
   RabbitMQ `x-max-length` counts ready messages only, so there a limit bounds the ready
   messages and each consumer adds up to its prefetch (docs/guarantees.md, limits table). History of
   (b)/(d) against the fanout prefetch:

   | code | fanout prefetch | (b) Redis p99 / bound | (b) RabbitMQ p99 / bound | (d) p99 |
   |---|---|---|---|---|
   | 360fa42 | 1 | 2.86 / 2.97 s pass | 2.51 / 2.69 s pass | 2.05 s pass |
   | f909bb7 | 64 | 3.54 / 2.36 s FAIL | 3.55 / 2.37 s FAIL | 3.52 s FAIL |
   | 9e0bdb8 | 4 | 2.29 / 2.37 s pass | 2.21 / 2.34 s pass | 2.08 s pass |
   | this run | {pf} | {b_redis} | {b_amqp} | {d_p99} |

3. **Retry-After after light traffic was the 60 s maximum.** The drain rate averaged quiet
   seconds, so it measured demand, not capacity, and read 0 (unknown, hence 60 s) after a
   quiet second. Fixed: workers mark each second in which their queue still had messages
   (one depth read per queue per second), the rate is averaged over those seconds only,
   and an unmeasured rate gives a 5 s Retry-After, not 60 s. In (c)'s second run (1 job/s
   for 6 s, then a burst of 800) the burst's refusals got a median Retry-After of
   {burst_p50} s and the population's refusals {cold_p50} s ({cold_60} at 60 s), while a full
   queue drains in about {drain_s} s; with a warm meter they get {warm}.

4. **An explicit `--prefetch-multiplier 1` was overridden** by the per-queue prefetch. Fixed
   (an explicit flag always wins; `config/celery_app.py`).

5. **`call_with_backoff` could sleep past `max_total_s`.** Fixed with tenacity's
   `stop_before_delay`: a hint beyond the time left ends the attempts at once.

6. **Solo pool + small prefetch on RabbitMQ crawls** (Celery 5.7, plain Celery: solo
   `--prefetch-multiplier 1` ~50 tasks/s). Floodgate's pool is solo-based, so its short
   queues prefetch 8: a sweep on this machine (plain solo p64 = 1.0) gave Floodgate's
   pool 0.87 at prefetch 4, 0.94 at 8 and 0.99 at 64 on RabbitMQ, and 0.96-1.0 at every
   prefetch on Redis (which pulls one message per BRPOP whatever the prefetch).

7. **Task events cost a lot whenever Flower watches.** Off by default; Flower turns them on
   while it runs. The "-E" diagnostic in (e) is the drain rate then.

8. **(e): the pool, not late acks, was the gap.** Floodgate's default pool is now
   `tasks/runtime/pool.py`: Celery's solo pool plus soft (SIGALRM) and hard (watchdog, then the
   process replaces itself in place) time limits. Defaults / plain fastest: {e_redis}
   (Redis) and {e_amqp} (RabbitMQ); the same worker with `-P prefork` (Celery's default
   pool, Floodgate's before): {p_redis} and {p_amqp}. Late acks cost nothing measurable
   ("plain solo p64 with acks_late").

9. **(a) sits near the noise level of its target.** Earlier full runs gave guarded / plain =
   0.951, 0.899, 0.995 on Redis and 0.952, 0.91, 0.879 on RabbitMQ; this run {a_redis} and
   {a_amqp}. Against Floodgate's configuration without the guard (`plain_config`): {ac_redis}
   (Redis), {ac_amqp} (RabbitMQ).

10. **(f): the API answered its overload slowly, for reasons of its own.** A profile
   (py-spy) and a gc / event-loop-lag probe in the API at 10x found: every 503 ran its
   exception handler in Starlette's threadpool, behind the threads storing posts (the
   handlers are coroutines now); full collections walked the ~1 million startup objects,
   75-88 ms every few seconds (`gc.freeze()` after startup: 10-23 ms); 40 threads
   convoyed on the GIL, one wait per round trip (4 threads admit and 4 store now,
   `API_STORE_THREADS`; the event loop's lag stayed under 9 ms at 10x, against 150 ms);
   FastAPI's OpenTelemetry hooks took 13 % of the API's CPU (off); a post, its entry and
   its job took five round trips on PostgreSQL (one statement now); and the worker read
   each job's status twice to publish events nobody listened to (one `PUBSUB NUMSUB` now).
   Medians of 3 alternating rounds, 20 s phases (`python -m bench.experiments.exp_f_ab
   --refs b2d5c7b,fab2edf --stack make-up`; load = 3x and 10x the drain alone measured in
   the same round):

   | make up | b2d5c7b | fab2edf |
   |---|---|---|
   | drain alone (jobs/s) | 66.0 | 76.6 |
   | 3x: completed / drain alone; 202 p99; 503 p99 | 0.855; 41 ms; 11 ms | 0.891; 49 ms; 20 ms |
   | 10x: completed / drain alone; 202 p99; 503 p99 | 0.838; 396 ms; 381 ms | 0.821; 83 ms; 52 ms |
   | item 4: refusals/s; API CPU per refusal | 2,137; 0.48 ms | 4,546; 0.22 ms |

   | prod (RabbitMQ) | b2d5c7b | fab2edf |
   |---|---|---|
   | drain alone (jobs/s) | 62.4 | 80.9 |
   | 3x: completed / drain alone; 202 p99; 503 p99 | 0.96; 30 ms; 12 ms | 0.89; 29 ms; 17 ms |
   | 10x: completed / drain alone; 202 p99; 503 p99 | 0.759; 423 ms; 462 ms | 0.794; 309 ms; 198 ms |
   | item 4: refusals/s; API CPU per refusal | 1,983; 0.52 ms | 4,290; 0.23 ms |

   Admission then got thread slots apart from storing (16d752e), so that a refusal never
   waits behind a store: against fab2edf, same method, make up, 10x 503 p99 54 ms
   (52-57) against 69 ms (50-550), the rest alike. Tried and reverted: a "single flight"
   memo (one request asks the broker again while the others are still refused), which
   refused a round trip's worth of a burst arriving just after the queue drained. Taking
   the worker's `nice` away gave no better completion and a worse 10x tail (3 rounds).
   What remains is the machine: at 10x the load generator, API, PostgreSQL, broker, Flower
   and a latency-bound worker (about 12 round trips a job) share two cores.

11. **(peers): end to end was bound by the submit path, and half of its Python cost
   changed nothing after the first message.** cProfile of `send_task` on Redis: kombu's
   `maybe_declare` copied the queue and its exchange (`bind`, about 40 attributes) on every
   publish before finding the queue in the connection's cache; Celery's `saferepr` built
   `argsrepr`/`kwargsrepr` with a streaming pretty-printer; and install() had swapped the
   class of an AMQP helper whose message builders were already bound, so none of our
   overrides saw them. `lib/src/celery_floodgate/transports/lean.py` looks the queue up first
   (kombu's own check, without the copy) and uses `repr` for flat plain args (the same
   text; tests/unit/test_lean_publish.py); redis-py now parses with hiredis. Cost of one
   `send_task`, medians of 3 alternating runs of 3,000 (2,000 on RabbitMQ), the commit
   before against this one, hiredis in both: Redis 709 -> 577 us, RabbitMQ 1,605 -> 1,446 us
   (a busy machine: a bare PING took 218 us). The two biggest costs left per message, as
   shares of the profiled time: on Redis Celery's `send_task` and kombu's `publish`
   around the transport (47 %) and the admission's round trip through redis-py (41 %); on
   RabbitMQ waiting for the publisher confirm (48 %: a durable queue confirms once the
   message is persisted) and serialising the message's properties, Celery's 20 headers
   as an AMQP table (10 %). The API publishes through the same path: (f) side by side
   (`python -m bench.experiments.exp_f_ab --refs a9552e1,77cff01 --stack make-up`, medians
   of 3, a day the drain alone was 41-43 jobs/s): 10x completion 0.79 -> 0.94, 503 p99
   448 -> 123 ms, 202 p99 519 -> 275 ms; 3x completion 0.92 -> 0.94, p99 wait 1.56 -> 1.49 s
   (bound 1.62 s), 202 p99 48 -> 45 ms, 503 p99 13.5 ms both.

12. **(peers) on RabbitMQ: a persistent message's confirm waited for classic queue
   version 1's disk path, and py-amqp read every frame with three system calls.** A bare
   py-amqp publish of a Celery-sized persistent message, waiting for its confirm, costs
   764 us on a version-1 queue and 425 us on a version-2 one (0.56x; medians of 7
   alternating rounds of 500, `python -m bench.experiments.exp_cqv2`). Both confirm only
   once the message is on disk (RabbitMQ's confirms guide); version 2 is the one RabbitMQ
   recommends from 3.13 on and the only one from 4.0. install() now declares classic
   queues with `x-queue-version: 2` (`RABBITMQ_QUEUE_VERSION`; quorum queues refuse the
   argument and get none). The worker's connection read each frame as header, payload and
   end byte, three `recv` calls, nine per delivered message: `ReadAheadTCPTransport`
   (lib/src/celery_floodgate/transports/amqp.py) takes what the socket holds, up to 64 KiB, and
   parses from that buffer (tests/unit/test_read_ahead.py: the same frames as py-amqp's
   from under a third of the reads). Worker drain of 12,000 queued tasks, the same code
   with the read toggled, 3 alternating pairs: CPU per task 328-361 us against 367-404 us,
   2,210-2,470 against 1,960-2,160 tasks/s; a lone publisher (one confirm per read) did not
   change (661 against 671 us, 8 rounds). The (peers) table now has Dramatiq on version-2
   queues too (a policy; its declarations name no version), so the two effects can be
   told apart: Floodgate drains faster than every Dramatiq variant, but end to end it stays
   behind, and further behind Dramatiq on the same queue version. End to end on two cores
   the publisher, the worker and RabbitMQ share the CPU, and the publisher's CPU decides:
   Floodgate's costs 453 us a message against Dramatiq's 207 us (/proc, 3,000 publishes),
   its rate falling from 1,335/s alone to 753/s beside its worker (Dramatiq: 1,124 to 876).
   That CPU is Celery's and kombu's publish path: wall shares of a lone publisher, py-spy
   --idle, 5,000 sends: the confirm's wait 41 %, Celery's `send_task` around the publish
   (routing, building the message, conf lookups, the result object) 23 %, py-amqp writing
   the frames with Celery's 20 headers 11 %. End to end through the API, PostgreSQL, RabbitMQ
   and the worker ((f)'s `prod` stack,
   `python -m bench.experiments.exp_f_ab --refs f64bced,f257dd9 --rounds 2 --stack prod`,
   medians of 2 alternating rounds, before against after): 3x completion 0.81 -> 0.90,
   202 p99 116 -> 50 ms, 503 p99 36 -> 24 ms, wait p99 1.56 -> 1.36 s (bound 0.99-1.04 s);
   10x completion 0.67 -> 0.87, 202 p99 495 -> 290 ms; 3,072 -> 3,462 refusals a second.
   Two rounds only; the direction held in every measure.

13. **(peers) on RabbitMQ, end to end: Floodgate's worker and queue are ahead of Dramatiq;
   the publish path through Celery's `send_task` and kombu is what is behind.** The (peers)
   rounds now read from /proc the CPU each process spends per task end to end (the
   publisher, the worker with its children, RabbitMQ, Redis), and run a diagnostic system,
   `floodgate bare publisher`: Floodgate's worker and queue, fed Celery's own message (a
   fresh id each) by py-amqp alone (`exp_shape.bare_sender`). In one run (N = 5,000,
   medians of 3 alternating rounds, a slow day with drains near 1,000/s): Floodgate 526/s
   end to end; Dramatiq with confirms 479/s (Floodgate 1.10x), on version-2 queues 763/s
   (0.69x); the bare publisher into Floodgate's worker 1,043/s (1.37x Dramatiq on version-2
   queues). CPU per task, end to end: the publisher 772 us through `send_task`, 299 us
   bare, 417 us for Dramatiq's; RabbitMQ 948, 580 and 698 us; the worker 966, 730 and 844
   us. So with the same worker, queue and message, the send path alone halves the rate. On
   two cores the publisher's CPU is taken from the worker and the broker, and both spend
   less per task when messages come faster (more of them share a wake-up; Erlang's
   schedulers also busy-wait after each piece of work, `+sbwt`). `python -m
   bench.experiments.exp_shape` splits a lone confirmed publish: client CPU per publish 626
   us through `send_task`, 309 us for the same message from bare py-amqp, 211 us for
   Dramatiq's message; RabbitMQ's CPU 490, 470 and 430 us; 590, 596 and 229 bytes (medians
   of 5 alternating rounds of 2,000). The message format costs about 100 us of client CPU
   and 40 us of the broker's; the send path costs more than twice that. In one process,
   with the layers under `send_task` stubbed out in turn: 719 us whole, 280 us without
   py-amqp's publish and confirm, 204 us without kombu's `Producer.publish` too (the three
   `app.conf` reads `send_task` makes cost 20, 3 and 14 us: a setting missing from a config
   module raises and catches two exceptions per probe). Floodgate's own code on that path
   (the guard's wrapper, the refusal memo, the counters) is within the noise of these
   figures. What the target needs is a publish path other than Celery's `send_task` and
   kombu's `Producer`, and Floodgate installs into any Celery app through exactly those
   (routing, publish signals, canvas, result backends), so issue 10's end-to-end target on
   RabbitMQ is left blocked, with these figures. On Redis the same split: Floodgate 1,145/s
   end to end against Dramatiq's 1,078/s (1.06x), drain 1,032 against 951/s (1.08x); CPU
   per task 622 us publisher, 624 us worker, 194 us Redis (Dramatiq: 304, 808, 212). There
   too Floodgate's publisher costs twice Dramatiq's, and its worker less.
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
        drain_s=_drain_s(results), warm=_warm(results),
        a_redis=_get(results, "a_redis", "ratio_vs_plain"),
        a_amqp=_get(results, "a_amqp", "ratio_vs_plain"),
        ac_redis=_get(results, "a_redis", "ratio_vs_plain_config"),
        ac_amqp=_get(results, "a_amqp", "ratio_vs_plain_config"))
    return METHOD + "\n" + findings


NOTES = notes
