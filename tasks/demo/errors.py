"""The demo's errors, beside the back-pressure ones they extend.

    BackpressureError (celery_floodgate.errors: QueueFull, BrokerUnavailable, ...)
     └── FloodgateError
          ├── StoreFailed          the job was admitted but its rows could not be stored
          ├── JobNotFound          no job was ever issued with that id
          ├── UnknownUser          a request named a user who does not exist
          └── NameTaken            a user with this name already exists
"""
from __future__ import annotations

from celery_floodgate import BackpressureError


class FloodgateError(BackpressureError):
    """Base of every error the demo raises on purpose (args hold the data)."""


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
