"""The demo's errors, beside the back-pressure ones they extend.

    BackpressureError (celery_floodgate.errors: QueueFull, BrokerUnavailable, ...)
     └── FloodgateError
          ├── StoreFailed          the job was admitted but its rows could not be stored
          ├── JobNotFound          no job was ever issued with that id
          ├── UnknownUser          a request named a user who does not exist
          ├── KeyNotFound          no live API key of the caller's with that id
          ├── NameTaken            a user with this name already exists
          ├── Unauthenticated      no valid credential (401)
          ├── Forbidden            a valid credential, someone else's resource (403)
          ├── RateLimited          too many requests of one kind (429)
          ├── FollowLimit          MAX_FOLLOWS_PER_USER reached (409)
          ├── KeyLimit             MAX_KEYS_PER_USER reached (409)
          └── DependencyDown       the database or Redis is unreachable (503, in words)
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
        # The cause (the driver's text: hosts, users) is kept for the log, not said.
        self.message = (f"the database did not store job {job_id}; {kept}; "
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


class KeyNotFound(FloodgateError):
    """The caller has no live API key with this id (revoked, someone else's, or none)."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self.message = f"you have no live API key with id {key_id!r}; GET /keys lists yours"
        super().__init__(key_id)


class NameTaken(FloodgateError):
    """A user with this name already exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.message = f"user name {name!r} is already taken; choose another"
        super().__init__(name)


class Unauthenticated(FloodgateError):
    """No credential, or one that is not (or no longer) valid: HTTP 401."""

    USER_HINT = ("send 'Authorization: Bearer <api_key>' with the key POST /users or "
                 "POST /keys returned")

    def __init__(self, problem: str, hint: str = USER_HINT) -> None:
        self.problem = problem
        self.message = f"{problem}; {hint}"
        super().__init__(problem, hint)


class Forbidden(FloodgateError):
    """The caller is known but may not act on this resource: HTTP 403."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        self.message = problem
        super().__init__(problem)


class RateLimited(FloodgateError):
    """Too many requests of one kind from one client: HTTP 429 with Retry-After."""

    def __init__(self, what: str, limit: str, retry_after_s: int) -> None:
        self.what, self.limit, self.retry_after_s = what, limit, retry_after_s
        self.message = (f"too many {what} from this client (the limit is {limit}); "
                        f"retry in {retry_after_s} s")
        super().__init__(what, limit, retry_after_s)


class FollowLimit(FloodgateError):
    """An account already follows as many accounts as one may: HTTP 409."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.message = (f"you already follow {limit} accounts, the most one account may "
                        "(MAX_FOLLOWS_PER_USER); unfollow one first with DELETE /follows/{name}")
        super().__init__(limit)


class KeyLimit(FloodgateError):
    """An account already holds as many live API keys as one may: HTTP 409."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.message = (f"you already hold {limit} live API keys, the most one account may "
                        "(MAX_KEYS_PER_USER); revoke one first with DELETE /keys/{key_id}")
        super().__init__(limit)


class DependencyDown(FloodgateError):
    """A service the request needs is unreachable: HTTP 503 with Retry-After.

    ``what`` names it in words; the driver's text stays in the server's log.
    """

    def __init__(self, what: str, retry_after_s: int = 5) -> None:
        self.what, self.retry_after_s = what, retry_after_s
        self.message = f"{what} is unreachable; nothing was changed; retry in {retry_after_s} s"
        super().__init__(what, retry_after_s)
