"""Celery's solo pool with soft and hard time limits: Floodgate's default pool.

Why: for short tasks the solo pool is Celery's fastest (no hand-off to a child
process; bench/RESULTS.md (e)), but Celery's own solo pool enforces no time
limits, so a stuck task would hold its message forever. This pool keeps the
speed and the limits. A watchdog thread looks at the running task every TICK_S:

* **Soft limit**: it sends ``SIGALRM`` to the main thread, where the task runs;
  the handler raises ``SoftTimeLimitExceeded`` inside the task, as prefork's
  ``SIGUSR1`` does in its child, so ``except SoftTimeLimitExceeded`` cleanup
  works the same.
* **Hard limit**: it fails the task with ``TimeLimitExceeded`` and acks it
  (Celery's own ``Request.on_timeout``, as prefork does), puts the messages this
  worker had prefetched back on their queue, and replaces the process in place
  (``exec``: same PID, so supervisors see nothing). That is the only way to stop
  a thread stuck in C code; prefork replaces its child instead.
* **Backstop**: a task that holds the GIL in C code starves the watchdog too; a
  CPU-time timer left at its default action (terminate) ends the process then,
  and late acks plus the redelivery bound (:mod:`tasks.base`) handle the message.

The per-task cost is two ``setitimer`` calls and a few attribute writes (~1 us):
waking a thread or reading the CPU count per task would cost more than a no-op
task itself. One task runs at a time per process: run one worker process per
core for the short queues, as docker-compose.yml does.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from functools import partial

from celery.concurrency import solo
from celery.concurrency.base import apply_target
from celery.exceptions import SoftTimeLimitExceeded
from celery.worker import state as worker_state

log = logging.getLogger("floodgate.pool")

#: How often the watchdog looks; limits fire up to this late.
TICK_S = 0.05
#: CPU seconds past the hard limit (times the cores) before the backstop ends the process.
BACKSTOP_GRACE_S = 5
#: Read once: os.cpu_count() reads /sys on each call.
CORES = os.cpu_count() or 1


class Running:
    """The task in progress, as the watchdog sees it."""

    __slots__ = ("started", "soft_s", "hard_s", "on_timeout", "soft_sent")

    def __init__(self, soft_s, hard_s, on_timeout) -> None:
        self.started = time.monotonic()
        self.soft_s, self.hard_s, self.on_timeout = soft_s, hard_s, on_timeout
        self.soft_sent = False


class TaskPool(solo.TaskPool):
    """``worker_pool = "tasks.runtime.pool:TaskPool"``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_apply = self._apply
        self._lock = threading.Lock()  # held by a hard timeout until the exec
        self._running: Running | None = None
        self._limits = threading.current_thread() is threading.main_thread()
        if not self._limits:
            log.warning("time limits need the pool in the main thread; running without them")
            return
        self._main = threading.main_thread().ident
        signal.signal(signal.SIGALRM, self._on_alarm)
        threading.Thread(target=self._watch, daemon=True, name="time-limits").start()

    def _apply(self, target, args=(), kwargs=None, timeout_callback=None,
               soft_timeout=None, timeout=None, **options):
        if shutting_down():
            # Warm shutdown: the consumer's first blocking AMQP call while it stops (the
            # remote-control consumer's cancel) makes py-amqp dispatch the deliveries
            # prefetched into its buffer, and this pool would run each one inline before
            # exiting (RabbitMQ: 1 running + 3 prefetched ran after SIGTERM). Leave them
            # unstarted and unacked: the broker gets them back when the connection closes
            # (tests/integration/test_stop.py).
            log.info("shutting down: leaving a prefetched task for the broker to redeliver")
            return None
        if not self._limits or not (soft_timeout or timeout):
            return apply_target(target, args, kwargs, **options)

        def limited(*a, **kw):
            self._running = Running(soft_timeout, timeout, timeout_callback)
            if timeout:
                signal.setitimer(signal.ITIMER_VIRTUAL, timeout * CORES + BACKSTOP_GRACE_S)
            try:
                return target(*a, **kw)
            finally:  # cleared before Celery's callbacks ack the message
                with self._lock:
                    self._running = None
                if timeout:
                    signal.setitimer(signal.ITIMER_VIRTUAL, 0)

        return apply_target(limited, args, kwargs, **options)

    def register_with_event_loop(self, hub):
        super().register_with_event_loop(hub)
        hub.on_tick.add(partial(wake_if_ready, hub))

    def _on_alarm(self, signum, frame):
        running = self._running
        if running is not None and running.soft_sent:
            raise SoftTimeLimitExceeded()

    def _watch(self) -> None:
        while True:
            time.sleep(TICK_S)
            running = self._running
            if running is None:
                continue
            elapsed = time.monotonic() - running.started
            if running.hard_s and elapsed >= running.hard_s:
                self._hard_timeout(running)
            elif running.soft_s and elapsed >= running.soft_s and not running.soft_sent:
                running.soft_sent = True
                signal.pthread_kill(self._main, signal.SIGALRM)
                running.on_timeout(True, running.soft_s)  # Celery's warning, as prefork logs

    def _hard_timeout(self, running: Running) -> None:
        self._lock.acquire()  # a task that returns just now cannot go on to its own ack
        if self._running is not running:
            self._lock.release()
            return
        request = getattr(running.on_timeout, "__self__", None)
        try:
            running.on_timeout(False, running.hard_s)  # FAILURE(TimeLimitExceeded), ack
            _ack_now(request)
            _restore_prefetched(request)
        except Exception:  # noqa: BLE001 - the process is replaced regardless
            log.exception("hard time limit: could not fail and ack the task")
        finally:
            replace_process()

    def _get_info(self):
        info = super()._get_info()
        info["implementation"] = f"{__name__}:{type(self).__name__}"
        info["timeouts"] = ("soft: SIGALRM", "hard: watchdog + exec")
        return info


def shutting_down() -> bool:
    """SIGTERM (warm) or a cold shutdown has begun: Celery's own flags, as it tests them
    (``should_stop`` is the exit code, 0, when set)."""
    return any(flag is not None and flag is not False
               for flag in (worker_state.should_stop, worker_state.should_terminate))


def wake_if_ready(hub) -> None:
    """Make the event loop's next poll return at once while callbacks are pending.

    kombu's loop (kombu/asynchronous/hub.py ``create_loop``) polls without looking
    at callbacks scheduled from its own thread while it ran the previous ones. Here
    the task runs inline, so its ack is such a callback: the loop then sleeps up to
    a second with the acks unsent, and RabbitMQ, the prefetch window full, sends
    nothing meanwhile (measured: drains of 5,000/s fell to 30/s in lock-step).
    """
    if hub._ready and hub._waker is not None:
        hub._waker.wake()


def _ack_now(request) -> None:
    """Celery schedules the ack on the event loop, which the stuck task blocks: ack here."""
    message = getattr(request, "message", None)
    if getattr(request, "acknowledged", False) and message is not None \
            and not message.acknowledged:
        message.ack()


def _restore_prefetched(request) -> None:
    """Redis keeps unacked messages until their visibility timeout: hand them back now.

    RabbitMQ requeues them by itself when the connection closes.
    """
    qos = getattr(getattr(getattr(request, "message", None), "channel", None), "qos", None)
    if hasattr(qos, "restore_unacked_once"):
        try:  # what a warm shutdown does; it drops acked messages first
            qos.restore_unacked_once()
        except Exception:  # noqa: BLE001 - the visibility timeout restores them anyway
            log.exception("could not restore prefetched messages; the visibility timeout will")


def replace_process() -> None:
    """Start this worker afresh in the same process (same PID, same arguments)."""
    log.error("hard time limit: replacing the worker process (pid %d) in place", os.getpid())
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
