"""Floodgate's errors: one small tree, each carrying its data and the fix.

    FloodgateError
     ├── Refused              one message was refused; the connection is fine
     │    ├── QueueFull       the queue is at its limit; retry after retry_after_s
     │    └── EtaTooFar       a countdown the broker would deliver twice
     ├── BrokerUnavailable    the broker did not accept the message in time
     ├── StoreFailed          the job was admitted but its rows could not be stored
     ├── JobNotFound          no job was ever issued with that id
     ├── UnknownUser          a request named a user who does not exist
     ├── NameTaken            a user with this name already exists
     └── TooManyDeliveries    a poison message, failed after MAX_REDELIVERIES
"""
from __future__ import annotations


class FloodgateError(Exception):
    """Base of every error Floodgate raises on purpose.

    ``args`` hold the data, so an error rebuilt as ``cls(*args)`` (pickle, or
    Celery's result backend) is whole again; ``str()`` gives the sentence.
    """

    message = ""

    def __str__(self) -> str:
        return self.message or super().__str__()


class Refused(FloodgateError):
    """The broker or the guard refused this one message; nothing was enqueued."""


class QueueFull(Refused):
    """A submission was refused because its queue is at its limit.

    Nothing was enqueued. Retry after ``retry_after_s`` seconds, with jitter
    (see :func:`tasks.client.submit_with_backoff`).
    """

    def __init__(self, queue: str, depth: int, limit: int, retry_after_s: int) -> None:
        self.queue = queue
        self.depth = depth
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.message = f"queue {queue!r} is full ({depth}/{limit}); retry in {retry_after_s} s"
        super().__init__(queue, depth, limit, retry_after_s)


class BrokerUnavailable(FloodgateError):
    """The broker could not be reached or did not confirm in time.

    Nothing was acknowledged as enqueued. Check the broker (``GET /healthz``),
    then retry.
    """

    def __init__(self, queue: str, cause: str, retry_after_s: int = 5) -> None:
        self.queue = queue
        self.cause = cause
        self.retry_after_s = retry_after_s
        self.message = (f"broker unavailable while submitting to {queue!r}: {cause}; "
                        f"retry in {retry_after_s} s")
        super().__init__(queue, cause, retry_after_s)


class StoreFailed(FloodgateError):
    """An admitted job's rows could not be committed, so the job was dropped.

    With ``fenced`` the job id was marked abandoned: nothing was kept and the
    admitted message will be skipped. Without it the database could not even be
    asked; a worker fences the id within COMMIT_GRACE_S. Retry after
    ``retry_after_s``.
    """

    def __init__(self, job_id: str, cause: str, fenced: bool = True,
                 retry_after_s: int = 5) -> None:
        self.job_id, self.cause, self.fenced = job_id, cause, fenced
        self.retry_after_s = retry_after_s
        kept = ("nothing was kept" if fenced else
                f"if it was stored after all, GET /jobs/{job_id} shows it within seconds; "
                "otherwise nothing was kept")
        self.message = (f"the database did not store job {job_id} ({cause}); {kept}; "
                        f"retry in {retry_after_s} s")
        super().__init__(job_id, cause, fenced, retry_after_s)


class JobNotFound(FloodgateError):
    """No job with this id was ever issued (or its record was purged)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.message = f"no job with id {job_id!r} was ever issued"
        super().__init__(job_id)


class UnknownUser(FloodgateError):
    """A request named a user who does not exist."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.message = f"unknown user {name!r}; create it first with POST /users"
        super().__init__(name)


class NameTaken(FloodgateError):
    """A user with this name already exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.message = f"user name {name!r} is already taken; choose another"
        super().__init__(name)


class EtaTooFar(Refused):
    """A countdown or ETA the broker would redeliver before it ran: it would run twice."""

    def __init__(self, queue: str, delay_s: float, max_countdown_s: int) -> None:
        self.queue, self.delay_s, self.max_countdown_s = queue, delay_s, max_countdown_s
        super().__init__(queue, delay_s, max_countdown_s)
        self.message = (
            f"a countdown of {delay_s:.0f} s on {queue!r} exceeds the longest the broker holds "
            f"an unacked message ({max_countdown_s} s: Redis visibility timeout or RabbitMQ "
            "consumer_timeout, less the task time limit), so it would be delivered twice; use a "
            "shorter countdown or a beat schedule"
        )


class TooManyDeliveries(FloodgateError):
    """A message kept coming back after its worker died: treated as poison and failed."""

    def __init__(self, task_name: str, deliveries: int) -> None:
        self.task_name, self.deliveries = task_name, deliveries
        super().__init__(task_name, deliveries)
        self.message = (
            f"{task_name} was delivered {deliveries} times and its worker died each time; "
            "failing it instead of looping (raise MAX_REDELIVERIES to allow more)"
        )
