"""Log lines that follow a job: job id, task name and queue on every line that has them.

``LOG_FORMAT=text`` (the default) keeps Celery's and uvicorn's readable lines and
appends ``[job=… task=… queue=…]`` where known; ``LOG_FORMAT=json`` makes every part
(API, worker, beat) write one JSON object per line (python-json-logger), with the
fields ``time``, ``level``, ``logger``, ``message`` and, where known, ``job_id``,
``task_name``, ``task_id`` and ``queue``.

Where the context comes from:

* **Worker** (and any code a task runs): the task being executed
  (``celery.current_task``): its id, name, queue (delivery routing key), and the
  job id, which is the task id of a job's first task (``fanout_post``) and the
  ``job_id`` argument of the others (``deliver_chunk``).
* **API**: publishing a job's first task (Celery's ``before_task_publish``, from
  ``POST /posts``) sets the job id, task and queue for the rest of that request's
  handler (each request runs in a context of its own), and logs one line
  ``job … submitted``.

Wiring: Celery's ``after_setup_logger``/``after_setup_task_logger`` signals (worker,
beat), ``celeryd_init`` (no ASCII banner on stdout in JSON mode), and
:func:`configure_api_logging` for uvicorn's loggers (called when api.routes.jobs is
imported, which uvicorn does before it logs that it serves).
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time

from celery import signals
from celery._state import get_current_app, get_current_task
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

#: Tasks whose first argument (or ``job_id`` keyword) is the job id.
JOB_TASKS = ("tasks.fanout.fanout_post", "tasks.fanout.deliver_chunk")
#: A job's first task: its task id is the job id (tasks/demo/handoff.py).
JOB_ROOT_TASKS = ("tasks.fanout.fanout_post",)
FIELDS = ("job_id", "task_name", "task_id", "queue")

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("floodgate_log", default=None)
log = logging.getLogger("floodgate.jobs")


def log_format() -> str:
    from config.settings import get_settings

    return get_settings().log_format


def job_id_of(name: str | None, task_id: str | None, args, kwargs) -> str | None:
    if isinstance(kwargs, dict) and kwargs.get("job_id"):
        return str(kwargs["job_id"])
    if name in JOB_ROOT_TASKS and task_id:
        return task_id
    if name in JOB_TASKS and args:
        return str(args[0])
    return None


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def from_celery_data(data) -> dict:
    """Context from the ``data`` Celery puts on its task lines ("received", "succeeded")."""
    if not isinstance(data, dict) or not data.get("name") or not data.get("id"):
        return {}
    name, task_id = data["name"], data["id"]
    job_id = task_id if name in JOB_ROOT_TASKS else None
    if job_id is None and name in JOB_TASKS:  # args come as their repr
        found = _UUID.search(str(data.get("args") or ""))
        job_id = found.group(0) if found else None
    return {"job_id": job_id, "task_name": name, "task_id": task_id}


def current_context() -> dict:
    """Job id, task name, task id and queue of what this line is about (empty if none)."""
    task = get_current_task()
    if task is not None and getattr(task.request, "id", None):
        request = task.request
        return {
            "job_id": job_id_of(task.name, request.id, request.args, request.kwargs),
            "task_name": task.name,
            "task_id": request.id,
            "queue": (request.delivery_info or {}).get("routing_key"),
        }
    return dict(_context.get() or {})


class JobContext(logging.Filter):
    """Puts the job context on each record (on handlers, so every logger's lines get it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_context() or from_celery_data(getattr(record, "data", None))
        for field in FIELDS:
            if getattr(record, field, None) is None:
                setattr(record, field, context.get(field))
        return True


class JsonLines(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
            timestamp=False,
            json_ensure_ascii=False,
        )

    def process_log_record(self, log_data: dict) -> dict:
        return {k: v for k, v in log_data.items() if not (k in FIELDS and v is None)}


class TextWithContext(logging.Formatter):
    """A readable formatter (Celery's or uvicorn's), plus ``[job=… task=… queue=…]``."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        job = getattr(record, "job_id", None)
        if not job:
            return text
        parts = [f"job={job}"]
        for field, label in (("task_name", "task"), ("queue", "queue")):
            value = getattr(record, field, None)
            if value and not (label == "task" and value in text):
                parts.append(f"{label}={value}")
        return f"{text} [{' '.join(parts)}]"


def formatter_for(handler: logging.Handler) -> logging.Formatter:
    if log_format() == "json":
        return JsonLines()
    current = handler.formatter
    return current if isinstance(current, TextWithContext) else TextWithContext(current)


def apply(logger: logging.Logger) -> None:
    """Context filter and the chosen format on each of ``logger``'s handlers."""
    for handler in logger.handlers:
        if not any(isinstance(f, JobContext) for f in handler.filters):
            handler.addFilter(JobContext())
        handler.setFormatter(formatter_for(handler))


@signals.after_setup_logger.connect
def _after_setup_logger(logger=None, **_):
    apply(logger)


@signals.after_setup_task_logger.connect
def _after_setup_task_logger(logger=None, **_):
    apply(logger)


@signals.celeryd_init.connect
def _quiet_worker(instance=None, **_):
    """No ASCII-art banner on stdout when every line must be JSON."""
    if log_format() == "json" and instance is not None:
        instance.quiet = True


@signals.before_task_publish.connect
def _publishing(sender=None, headers=None, routing_key=None, **_):
    """A job submitted outside a task (the API): remember it for this context, log it."""
    if sender not in JOB_ROOT_TASKS or get_current_task() is not None:
        return
    headers = headers or {}
    context = {"job_id": headers.get("id"), "task_name": sender, "task_id": headers.get("id"),
               "queue": routing_key}
    _context.set(context)


@signals.after_task_publish.connect
def _published(sender=None, headers=None, routing_key=None, **_):
    """Logged once the broker admitted it: a refusal writes no line (it may come in
    thousands a second, and the 503 already says it)."""
    if sender not in JOB_ROOT_TASKS or get_current_task() is not None:
        return
    log.info("job %s submitted: %s to queue %s", (headers or {}).get("id"), sender, routing_key)


def _quiet_beat() -> None:
    """``celery beat`` prints a banner before it sets logging up; JSON mode silences it,
    as ``celery -q beat`` would (the app's Beat class, with quiet forced)."""
    app = get_current_app()
    base = app.Beat

    class QuietBeat(base):
        def __init__(self, *args, **kwargs):
            kwargs["quiet"] = True
            super().__init__(*args, **kwargs)

    app.Beat = QuietBeat


def configure_api_logging() -> None:
    """Under uvicorn: its loggers' handlers in the chosen format, and the app's own
    loggers (root, INFO) through a stderr handler of the same format. No-op elsewhere."""
    uvicorn_loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    if not any(lg.handlers for lg in uvicorn_loggers):
        return
    for logger in uvicorn_loggers:
        apply(logger)
    root = logging.getLogger()
    if not any(getattr(h, "_floodgate", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._floodgate = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        root.addHandler(handler)
    apply(root)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def _early_json() -> None:
    """JSON from the first line: Python warnings (e.g. Celery's, printed before it sets
    logging up) go through a JSON handler on the root logger until Celery or
    :func:`configure_api_logging` configures logging."""
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler._floodgate = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        apply(root)


def _json_say() -> None:
    """Celery's worker prints a few notices straight to the terminal from its signal
    handlers ("worker: Warm shutdown (MainProcess)", via ``safe_say``, not logging, to
    stay signal-safe); in JSON mode they are printed as JSON lines, still with print."""
    from celery.apps import worker

    def say(msg, f=sys.__stderr__):
        line = json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "level": "WARNING",
                           "logger": "celery.apps.worker", "message": str(msg),
                           "process": os.getpid()})
        print(line, file=f, flush=True)

    worker.safe_say = say


if log_format() == "json":
    _early_json()
    _json_say()
    if "beat" in sys.argv[1:]:
        _quiet_beat()
