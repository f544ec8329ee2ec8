"""Shared request pieces. Routes open their own transactions, so a commit
always happens before the response it backs is sent."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
Limit = Annotated[int, Query(ge=1, le=200, description="how many items, 1..200")]


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


async def json_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as ``model``; a RequestValidationError (422) as FastAPI's
    own body parameters raise, with the same ``("body", ...)`` locations."""
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if not media_type.endswith(("/json", "+json")):
        raise RequestValidationError([{"type": "model_attributes_type", "loc": ("body",),
                                       "msg": "send the body as JSON (Content-Type: "
                                              "application/json)", "input": None}])
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in exc.errors()]) from None
