"""The FastAPI app: ``uvicorn api.main:app``."""
from __future__ import annotations

import gc
import logging
import sys
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError

from api.limits import BodySizeLimit
from api.routes import aggregates, jobs, ops, posts, users
from config import app as celery_app
from config.logging import configure_api_logging
from config.secrets import masked_url
from config.settings import get_settings
from tasks.demo.db import async_engine, check_schema, close_async_engine, engine
from celery_floodgate import BrokerUnavailable, QueueFull
from celery_floodgate.aio import close_async
from tasks.demo.errors import (
    DependencyDown,
    FollowLimit,
    Forbidden,
    JobNotFound,
    KeyLimit,
    KeyNotFound,
    NameTaken,
    RateLimited,
    StoreFailed,
    Unauthenticated,
    UnknownUser,
)

log = logging.getLogger("floodgate.api")
settings = get_settings()
settings.require_api_secrets()  # fail fast: the API cannot check a key without them
# The event loop answers refusals; with API_SUBMIT_PATH=threads, threads store accepted
# posts (and auth's key lookups run in threads on both paths). CPython hands the GIL
# over every 5 ms by default, so a refusal could wait that long behind a thread running
# Python code: 1 ms keeps a refusal's answer prompt (bench (f): 503 p99).
sys.setswitchinterval(0.001)
# Under uvicorn, LOG_FORMAT=json turns its loggers to JSON lines before it logs anything.
configure_api_logging()


@asynccontextmanager
async def lifespan(_: FastAPI):
    check_schema(engine())  # fails fast: database unreachable, or its schema not the code's
    if settings.api_submit_path == "async":
        async_engine()  # its driver's modules loaded now, so frozen below with the rest
    # Everything loaded so far (FastAPI, SQLAlchemy, Celery, kombu: about a million
    # objects) lives as long as the process. Left to the collector, each full collection
    # walked them all, an 80 ms stop every few seconds under overload: the p99 of every
    # answer (bench (f)). Frozen, they are never scanned again.
    gc.collect()
    gc.freeze()
    yield
    await close_async(celery_app)  # API_SUBMIT_PATH=async: this loop's broker connections
    await close_async_engine()  # ... and its database pool


app = FastAPI(
    lifespan=lifespan,
    # FastAPI's OpenTelemetry hooks look the global providers up on every request (13 % of
    # the API's CPU under overload, bench (f)); Floodgate exports Prometheus metrics instead.
    telemetry={"tracing": False, "metrics": False, "logs": False},
    title="Floodgate",
    # The route list, without a key; API_PUBLIC_DOCS=false hides it.
    openapi_url="/openapi.json" if settings.api_public_docs else None,
    summary="Background jobs with back pressure: a full queue answers 503 + Retry-After.",
)
app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
# Starlette tries routes in order: the hot path (POST /posts) first.
for module in (posts, jobs, users, aggregates, ops):
    app.include_router(module.router)


def _json(status: int, detail: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def _later(status: int, detail: str, retry_after_s: int, **extra) -> JSONResponse:
    """A refusal to retry: ``Retry-After`` and ``retry_after_s`` in the body."""
    return _json(status, detail, {"Retry-After": str(retry_after_s)},
                 retry_after_s=retry_after_s, **extra)


# Handlers are coroutines: Starlette runs a plain function handler in its threadpool,
# so every 503 would queue behind the threads storing accepted posts (bench (f)).
@app.exception_handler(QueueFull)
async def _queue_full(_: Request, exc: QueueFull) -> JSONResponse:
    """``reason``: full (the queue's limit), class (the bound of the request's
    criticality) or share (the caller holds its share of the queue); the detail says
    which in words, and ``Retry-After`` is the caller's own (its share's, its class's)."""
    extra = {"reason": exc.reason}
    if exc.tenant is not None:
        extra.update(criticality=exc.criticality)
    if exc.share:
        extra.update(share=exc.share)
    return _later(503, str(exc), exc.retry_after_s, queue=exc.queue, depth=exc.depth,
                  limit=exc.limit, **extra)


# A 503 says what is down in words. The driver's text (hosts, users, addresses) goes to
# the server's log only, with any URL's password masked.
@app.exception_handler(BrokerUnavailable)
async def _broker_down(_: Request, exc: BrokerUnavailable) -> JSONResponse:
    log.warning("broker unavailable for %s: %s", exc.queue, masked_url(exc.cause))
    detail = (f"the message broker is unreachable, so nothing was queued to {exc.queue!r}; "
              f"retry in {exc.retry_after_s} s")
    return _later(503, detail, exc.retry_after_s, queue=exc.queue)


@app.exception_handler(StoreFailed)
async def _store_failed(_: Request, exc: StoreFailed) -> JSONResponse:
    log.warning("job %s not stored: %s", exc.job_id, masked_url(exc.cause))
    return _later(503, str(exc), exc.retry_after_s, job_id=exc.job_id)


@app.exception_handler(DependencyDown)
async def _dependency_down(_: Request, exc: DependencyDown) -> JSONResponse:
    return _later(503, str(exc), exc.retry_after_s)


@app.exception_handler(OperationalError)  # connection lost, server gone, timeouts
@app.exception_handler(InterfaceError)
async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database error on %s %s: %s", request.method, request.url.path,
                masked_url(str(exc.orig)))
    return await _dependency_down(request, DependencyDown("the database"))


@app.exception_handler(redis.RedisError)
async def _redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
    log.warning("Redis error on %s %s: %s", request.method, request.url.path,
                masked_url(str(exc)))
    return await _dependency_down(request, DependencyDown("Redis (events and rate limits)"))


@app.exception_handler(Unauthenticated)
async def _unauthenticated(_: Request, exc: Unauthenticated) -> JSONResponse:
    return _json(401, str(exc), {"WWW-Authenticate": "Bearer"})


@app.exception_handler(Forbidden)
async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
    return _json(403, str(exc))


@app.exception_handler(RateLimited)
async def _rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
    return _later(429, str(exc), exc.retry_after_s)


@app.exception_handler(UnknownUser)
@app.exception_handler(JobNotFound)
@app.exception_handler(KeyNotFound)
async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return _json(404, str(exc))


@app.exception_handler(FollowLimit)
@app.exception_handler(KeyLimit)
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
