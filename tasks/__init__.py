"""Floodgate's task layer: submission, the guard, tasks and the work they call."""
from tasks import signals  # noqa: F401 - stamps every publish; imported with the package
from tasks.errors import (
    BrokerUnavailable,
    FloodgateError,
    JobNotFound,
    NameTaken,
    QueueFull,
    UnknownUser,
)

__all__ = (
    "BrokerUnavailable",
    "FloodgateError",
    "JobNotFound",
    "NameTaken",
    "QueueFull",
    "UnknownUser",
)
