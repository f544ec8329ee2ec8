"""The back-pressure errors: one small tree, each carrying its data and the fix.

    BackpressureError
     ├── Refused              one message was refused; the connection is fine
     │    ├── QueueFull       the queue is at its limit; retry after retry_after_s
     │    └── EtaTooFar       a countdown the broker would deliver twice
     ├── BrokerUnavailable    the broker did not accept the message in time
     └── NotInstalled         install() was given limits that do not fit the app

``args`` hold the data, so an error rebuilt as ``cls(*args)`` (pickle, or
Celery's result backend) is whole again; ``str()`` gives the sentence.
"""
from __future__ import annotations


class BackpressureError(Exception):
    """Base of every error this package raises on purpose: catch it to catch them all."""

    #: The sentence ``str()`` gives; set by each subclass from its data.
    message: str = ""

    def __str__(self) -> str:
        return self.message or super().__str__()


class Refused(BackpressureError):
    """The broker or the guard refused this one message; nothing was enqueued.

    The connection is fine: a pooled producer keeps it (only other errors replace it).
    """


class QueueFull(Refused):
    """A submission was refused because its queue is at its limit.

    Nothing was enqueued. Retry after ``retry_after_s`` seconds, with jitter
    (see `celery_floodgate.client.call_with_backoff`).

    :param queue: the queue that is full.
    :param depth: its depth when it refused (what workers hold prefetched included).
    :param limit: the length bound it refused at.
    :param retry_after_s: whole seconds until the queue has room for this caller,
        from the measured drain rate (1 to 60).
    :param reason: ``"full"`` (the limit), ``"class"`` (the bound of the submission's
        criticality class) or ``"share"`` (its tenant holds its fair share);
        see `celery_floodgate.fairness`.
    :param tenant: the submission's tenant, when a fairness policy is installed.
    :param criticality: its class, likewise.
    :param share: the tenant's share when ``reason`` is ``"share"``.
    """

    def __init__(self, queue: str, depth: int, limit: int, retry_after_s: int,
                 reason: str = "full", tenant: str | None = None,
                 criticality: str | None = None, share: int = 0) -> None:
        self.queue = queue
        self.depth = depth
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.reason, self.tenant, self.criticality, self.share = (
            reason, tenant, criticality, share)
        if reason == "share":
            self.message = (f"tenant {tenant!r} already holds its share of queue {queue!r} "
                            f"({share} of the {depth}/{limit} waiting); retry in "
                            f"{retry_after_s} s, when its share has drained")
        elif reason == "class":
            self.message = (f"queue {queue!r} refuses {criticality} work at this depth "
                            f"({depth}/{limit}); retry in {retry_after_s} s, or submit it "
                            "as a higher class if it is more critical")
        else:
            self.message = (f"queue {queue!r} is full ({depth}/{limit}); "
                            f"retry in {retry_after_s} s")
        super().__init__(queue, depth, limit, retry_after_s, reason, tenant, criticality,
                         share)


class EtaTooFar(Refused):
    """A countdown or ETA the broker would redeliver before it ran: it would run twice.

    Raised before anything is sent, when the delay reaches ``install()``'s
    ``max_countdown_s``.

    :param queue: the queue the task was sent to.
    :param delay_s: the countdown asked for, in seconds.
    :param max_countdown_s: the longest countdown the broker holds safely.
    """

    def __init__(self, queue: str, delay_s: float, max_countdown_s: float) -> None:
        self.queue, self.delay_s, self.max_countdown_s = queue, delay_s, max_countdown_s
        super().__init__(queue, delay_s, max_countdown_s)
        self.message = (
            f"a countdown of {delay_s:.0f} s on {queue!r} exceeds the longest the broker holds "
            f"an unacked message ({max_countdown_s} s: Redis visibility timeout or RabbitMQ "
            "consumer_timeout, less the task time limit), so it would be delivered twice; use a "
            "shorter countdown or a beat schedule"
        )


class BrokerUnavailable(BackpressureError):
    """The broker could not be reached or did not confirm in time.

    Nothing was acknowledged as enqueued (after a confirm timeout the message may
    still have landed: a retry can run it twice). Check the broker, then retry.

    :param queue: the queue being submitted to.
    :param cause: what failed, e.g. the underlying error's type and text.
    :param retry_after_s: a suggested wait before retrying, in seconds.
    """

    def __init__(self, queue: str, cause: str, retry_after_s: int = 5) -> None:
        self.queue = queue
        self.cause = cause
        self.retry_after_s = retry_after_s
        self.message = (f"broker unavailable while submitting to {queue!r}: {cause}; "
                        f"retry in {retry_after_s} s")
        super().__init__(queue, cause, retry_after_s)


class NotInstalled(BackpressureError, ValueError):
    """``install()`` refused its arguments; the message names the queue and the fix.

    Also a `ValueError`, as any bad argument.

    :param problem: the sentence naming what does not fit and how to fix it.
    """

    def __init__(self, problem: str) -> None:
        self.message = f"back pressure not installed: {problem}"
        super().__init__(problem)
