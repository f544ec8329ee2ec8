"""Operational endpoints: health and Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.health import checks
from api.metrics import METRICS_REGISTRY

router = APIRouter(tags=["operations"])


@router.get("/healthz", responses={503: {"description": "a dependency is down"}})
def healthz() -> JSONResponse:
    results = checks()
    down = sorted(name for name, status in results.items() if status != "ok")
    body = {"status": "degraded" if down else "ok", "checks": results}
    if down:
        body["detail"] = f"down: {', '.join(down)}"
    return JSONResponse(body, status_code=503 if down else 200)


@router.get("/metrics")
def metrics() -> Response:
    # The sum over every API process when PROMETHEUS_MULTIPROC_DIR is set (api/metrics.py).
    return Response(generate_latest(METRICS_REGISTRY), media_type=CONTENT_TYPE_LATEST)
