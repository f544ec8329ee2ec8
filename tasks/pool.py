"""Celery's solo pool with soft and hard time limits: Floodgate's default pool.

Why: for short tasks the solo pool is Celery's fastest (no hand-off to a child
process; bench/RESULTS.md (e)), but Celery's own solo pool enforces no time
limits, so a stuck task would hold its message forever. This pool keeps the
speed and the limits:

* **Soft limit**: ``SIGALRM`` raises ``SoftTimeLimitExceeded`` inside the task
  (it runs in the main thread), as prefork's ``SIGUSR1`` does in its child, so
  ``except SoftTimeLimitExceeded`` cleanup works the same.
* **Hard limit**: a watchdog thread fails the task with ``TimeLimitExceeded``
  and acks it (Celery's own ``Request.on_timeout``, as prefork does), puts the
  messages this worker had prefetched back on their queue, and replaces the
  process in place (``exec``: same PID, so supervisors see nothing). That is the
  only way to stop a thread stuck in C code; prefork replaces its child instead.
* **Backstop**: a task that holds the GIL in C code starves the watchdog too; a
  CPU-time timer left at its default action (terminate) ends the process then,
  and late acks plus the redelivery bound (:mod:`tasks.base`) handle the message.

One task runs at a time per process: run one worker process per core (or per
expected concurrent I/O wait) for the short queues, as docker-compose.yml does.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from celery.concurrency import solo
from celery.concurrency.base import apply_target
from celery.exceptions import SoftTimeLimitExceeded

log = logging.getLogger("floodgate.pool")

#: CPU seconds, per core, past the hard limit before the backstop ends the process.
BACKSTOP_GRACE_S = 5


class TaskPool(solo.TaskPool):
    """``worker_pool = "tasks.pool:TaskPool"``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_apply = self._apply
        self._lock = threading.Lock()
        self._running: object | None = None
        self._watchdog = Watchdog(self._hard_timeout)
        self._signals = threading.current_thread() is threading.main_thread()
        if self._signals:
            signal.signal(signal.SIGALRM, self._on_alarm)
        else:
            log.warning("time limits need the pool in the main thread; running without them")

    def _apply(self, target, args=(), kwargs=None, timeout_callback=None,
               soft_timeout=None, timeout=None, **options):
        if not self._signals:
            return apply_target(target, args, kwargs, **options)
        token = object()

        def limited(*a, **kw):
            with self._lock:
                self._running = token
            self._arm(soft_timeout, timeout)
            if timeout:
                self._watchdog.arm(token, time.monotonic() + timeout, timeout_callback, timeout)
            try:
                return target(*a, **kw)
            finally:  # disarmed before Celery's callbacks ack the message
                self._disarm()

        return apply_target(limited, args, kwargs, **options)

    def _disarm(self) -> None:
        with self._lock:
            self._running = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        self._watchdog.disarm()

    @staticmethod
    def _arm(soft_timeout: float | None, timeout: float | None) -> None:
        if soft_timeout:
            signal.setitimer(signal.ITIMER_REAL, soft_timeout)
        if timeout:
            cpu_s = timeout * (os.cpu_count() or 1) + BACKSTOP_GRACE_S
            signal.setitimer(signal.ITIMER_VIRTUAL, cpu_s)  # SIGVTALRM: default action ends us

    def _on_alarm(self, signum, frame):
        if self._running is not None:
            raise SoftTimeLimitExceeded()

    def _hard_timeout(self, token, timeout_callback, timeout) -> None:
        # Held until the exec: a task that returns just now cannot go on to its own ack.
        self._lock.acquire()
        if self._running is not token:
            self._lock.release()
            return  # the task finished as the limit passed
        request = getattr(timeout_callback, "__self__", None)
        try:
            timeout_callback(False, timeout)  # FAILURE(TimeLimitExceeded), ack
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


class Watchdog:
    """One daemon thread that calls ``on_expiry`` when an armed deadline passes."""

    def __init__(self, on_expiry) -> None:
        self._on_expiry = on_expiry
        self._cond = threading.Condition()
        self._armed: tuple | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="hard-time-limit")
        self._thread.start()

    def arm(self, token, deadline: float, *details) -> None:
        with self._cond:
            self._armed = (token, deadline, details)
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._armed = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._armed is None or time.monotonic() < self._armed[1]:
                    wait = None if self._armed is None else self._armed[1] - time.monotonic()
                    self._cond.wait(wait)
                token, _, details = self._armed
                self._armed = None
            self._on_expiry(token, *details)


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
