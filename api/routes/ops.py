"""Operational endpoints: the public health check; behind OPS_TOKEN, the detailed one
and Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import require_ops
from api.health import down, public_checks, run_checks
from api.metrics import METRICS_REGISTRY

router = APIRouter(tags=["operations"])
OPS_ONLY = {401: {"description": "no 'Authorization: Bearer <OPS_TOKEN>'"}}


@router.get("/healthz", responses={503: {"description": "a dependency is down (named)"}})
async def healthz() -> JSONResponse:
    """Whether the broker, result backend and database answer, as checked at most
    HEALTH_CACHE_S ago: ``{"status": "ok"}``, or 503 ``{"status": "degraded", "down":
    [...]}``."""
    return _answer(await public_checks().get())


@router.get("/healthz/details", dependencies=[Depends(require_ops)],
            responses={**OPS_ONLY, 503: {"description": "a dependency is down (named)"}})
async def healthz_details() -> JSONResponse:
    """The checks, run now, with each failure's exception type."""
    results = await run_in_threadpool(run_checks, "/healthz/details")
    return _answer(results, checks=results)


def _answer(results: dict[str, str], **extra) -> JSONResponse:
    names = down(results)
    body = {"status": "degraded" if names else "ok", **extra}
    if names:
        body.update(down=names, detail=f"down: {', '.join(names)}")
    return JSONResponse(body, status_code=503 if names else 200)


@router.get("/metrics", dependencies=[Depends(require_ops)], responses=OPS_ONLY)
def metrics() -> Response:
    # The sum over every API process when PROMETHEUS_MULTIPROC_DIR is set (api/metrics.py).
    return Response(generate_latest(METRICS_REGISTRY), media_type=CONTENT_TYPE_LATEST)
