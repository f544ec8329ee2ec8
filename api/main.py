"""The FastAPI app: ``uvicorn api.main:app``."""
from __future__ import annotations

import gc
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.limits import BodySizeLimit
from api.routes import aggregates, jobs, ops, posts, users
from config.logging import configure_api_logging
from config.settings import get_settings
from tasks.demo.db import engine
from celery_floodgate import BrokerUnavailable, QueueFull
from tasks.demo.errors import JobNotFound, NameTaken, StoreFailed, UnknownUser

settings = get_settings()
# The event loop answers refusals; threads store accepted posts. CPython hands the GIL
# over every 5 ms by default, so a refusal could wait that long behind a thread running
# Python code: 1 ms keeps a refusal's answer prompt (bench (f): 503 p99).
sys.setswitchinterval(0.001)
# Under uvicorn, LOG_FORMAT=json turns its loggers to JSON lines before it logs anything.
configure_api_logging()


@asynccontextmanager
async def lifespan(_: FastAPI):
    engine()  # creates missing tables; fails fast if the database is unreachable
    # Everything loaded so far (FastAPI, SQLAlchemy, Celery, kombu: about a million
    # objects) lives as long as the process. Left to the collector, each full collection
    # walked them all, an 80 ms stop every few seconds under overload: the p99 of every
    # answer (bench (f)). Frozen, they are never scanned again.
    gc.collect()
    gc.freeze()
    yield


app = FastAPI(
    lifespan=lifespan,
    # FastAPI's OpenTelemetry hooks look the global providers up on every request (13 % of
    # the API's CPU under overload, bench (f)); Floodgate exports Prometheus metrics instead.
    telemetry={"tracing": False, "metrics": False, "logs": False},
    title="Floodgate",
    summary="Background jobs with back pressure: a full queue answers 503 + Retry-After.",
)
app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
for module in (users, posts, jobs, aggregates, ops):
    app.include_router(module.router)


def _json(status: int, detail: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


# Handlers are coroutines: Starlette runs a plain function handler in its threadpool,
# so every 503 would queue behind the threads storing accepted posts (bench (f)).
@app.exception_handler(QueueFull)
async def _queue_full(_: Request, exc: QueueFull) -> JSONResponse:
    return _json(503, str(exc), {"Retry-After": str(exc.retry_after_s)}, queue=exc.queue,
                 depth=exc.depth, limit=exc.limit, retry_after_s=exc.retry_after_s)


@app.exception_handler(BrokerUnavailable)
async def _broker_down(_: Request, exc: BrokerUnavailable) -> JSONResponse:
    return _json(503, str(exc), {"Retry-After": str(exc.retry_after_s)}, queue=exc.queue,
                 retry_after_s=exc.retry_after_s)


@app.exception_handler(StoreFailed)
async def _store_failed(_: Request, exc: StoreFailed) -> JSONResponse:
    return _json(503, str(exc), {"Retry-After": str(exc.retry_after_s)}, job_id=exc.job_id,
                 retry_after_s=exc.retry_after_s)


@app.exception_handler(UnknownUser)
@app.exception_handler(JobNotFound)
async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return _json(404, str(exc))


@app.exception_handler(NameTaken)
async def _conflict(_: Request, exc: NameTaken) -> JSONResponse:
    return _json(409, str(exc))


@app.exception_handler(RequestValidationError)
async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    """One sentence per problem; the offending input is never echoed back (it may not
    even be encodable, e.g. a lone surrogate)."""
    errors = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "invalid"))}
        for err in exc.errors()
    ]
    sentence = "; ".join(f"{'.'.join(e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in errors)
    return _json(422, sentence or "invalid request", errors=errors)
