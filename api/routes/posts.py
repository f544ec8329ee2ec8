from __future__ import annotations

import functools

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api import threaded
from api.auth import CurrentUser, Principal, user_key
from api.deps import json_body
from api.schemas import PostAccepted, PostIn, PostsBatchIn, PostsBatchResult
from config.settings import get_settings
from celery_floodgate import guard_for
from tasks.demo import handoff_async
from tasks.demo.errors import Forbidden
from tasks.demo.handoff import FANOUT, publish_then_store_many

router = APIRouter(tags=["posts"])


@router.post(
    "/posts", status_code=202, response_model=PostAccepted,
    responses={401: {"description": "no API key, or not a valid one"},
               403: {"description": "critical work asked by a user not in CRITICAL_USERS"},
               503: {"description": "queue full, the class's bound or your share of it "
                     "reached, broker or database down; see Retry-After"}},
    # The key and the body are read in the function (the hot path of every refusal), so
    # the documentation names them here, as a dependency and a body parameter would.
    openapi_extra={"security": [{"APIKey": []}], "requestBody": {
        "required": True, "content": {"application/json": {"schema": PostIn.model_json_schema()}}}},
)
async def post_post(request: Request, response: Response) -> dict:
    """Queue a post's fan-out, then store it on the caller's timeline.

    The key is checked first (api/auth.py), then admission, which touches no table, so
    a 503 for a full queue costs at most one broker round trip and leaves nothing
    behind; a 202 is sent after the post and its job are committed
    (tasks/demo/handoff.py says why that is safe). While the broker's last refusal
    holds (lib/src/celery_floodgate/memo.py), a post is refused right here, without a
    round trip. Both steps are awaited on the event loop (tasks/demo/handoff_async.py),
    or with API_SUBMIT_PATH=threads run in a few threads (api/threaded.py).

    The key check and the body's validation are called here rather than declared as
    ``me: CurrentUser`` and ``body: PostIn``, in the same order FastAPI would run them:
    FastAPI's resolution of the two cost a refusal about 20 µs (bench/RESULTS.md, auth).

    The post is admitted as its author (the tenant: the user's name) and the body's
    ``criticality`` (celery_floodgate.fairness), so a user over its share of the queue is
    refused while the others are still admitted.
    """
    me = await user_key(request)
    body = await json_body(request, PostIn)
    tenant, criticality = allowed_tenant(me, body.criticality), body.criticality
    refuse_if_remembered(tenant, criticality)
    if get_settings().api_submit_path == "async":
        job_id = await handoff_async.admit(tenant, criticality)
        accepted = await handoff_async.store(me.user_id, body.text, job_id)
    else:
        accepted = await threaded.accept_post(
            me.user_id, body.text, tenant, criticality,
            lambda: refuse_if_remembered(tenant, criticality))
    status_url = f"/jobs/{accepted['job_id']}"
    response.headers["Location"] = status_url
    return {**accepted, "status_url": status_url}


def allowed_tenant(me: Principal, criticality: str) -> str:
    """The tenant ``me`` submits as (its name); Forbidden (403, before any admission or
    write) when it may not submit work of this class (CRITICAL_USERS)."""
    if not get_settings().may_submit(me.name, criticality):
        raise Forbidden(f"user {me.name!r} may not submit {criticality} work (the operators "
                        "grant it in CRITICAL_USERS); send criticality 'default' or "
                        "'sheddable'")
    return me.name


def refuse_if_remembered(tenant: str, criticality: str) -> None:
    """Raise the broker's remembered refusal of this tenant and class, if one holds (a
    refusal of another user, or of a class shed earlier, does not count)."""
    full = fanout_guard().recent_refusal(FANOUT, tenant=tenant, criticality=criticality)
    if full is not None:
        raise full


@functools.cache
def fanout_guard():
    from config import app

    return guard_for(app)


@router.post(
    "/posts:batch", status_code=202, response_model=PostsBatchResult,
    response_model_exclude_none=True,
    responses={207: {"description": "some posts were refused (queue full); see Retry-After",
                     "model": PostsBatchResult},
               403: {"description": "critical work asked by a user not in CRITICAL_USERS"},
               422: {"description": "an empty list, too many posts, or a bad item (named)"},
               503: {"description": "every post refused, or broker or database down"}},
)
async def post_posts_batch(body: PostsBatchIn, me: CurrentUser, response: Response):
    """Queue many of the caller's posts' fan-outs in one batch publish, then store the
    admitted ones.

    As ``POST /posts``, per item: admission first (one broker round trip for the
    whole batch), then the admitted posts and jobs in one transaction; a refused
    item leaves nothing behind. 202 when all were accepted, 207 when some were
    refused, 503 when all were; ``Retry-After`` whenever one was refused. Every post
    is admitted as the caller and the batch's ``criticality``, as ``POST /posts``.
    """
    tenant = allowed_tenant(me, body.criticality)
    items = [(me.user_id, p.text) for p in body.posts]
    if get_settings().api_submit_path == "async":
        outcome = await handoff_async.publish_then_store_many(items, tenant, body.criticality)
    else:
        outcome = await run_in_threadpool(publish_then_store_many, items, tenant,
                                          body.criticality)
    results, retry_after = [], None
    for i, item in enumerate(outcome):
        full = item.get("refused")
        if full is not None:
            retry_after = full.retry_after_s if retry_after is None else min(
                retry_after, full.retry_after_s)
            results.append({"index": i, "status": "refused", "retry_after_s": full.retry_after_s,
                            "reason": full.reason, "detail": str(full)})
        else:
            results.append({"index": i, "status": "accepted", "post_id": item["post_id"],
                            "job_id": item["job_id"], "status_url": f"/jobs/{item['job_id']}"})
    refused = sum(r["status"] == "refused" for r in results)
    payload = {"accepted": len(results) - refused, "refused": refused, "results": results}
    if not refused:
        return payload
    status = 503 if refused == len(results) else 207
    return JSONResponse(PostsBatchResult(**payload).model_dump(exclude_none=True),
                        status_code=status, headers={"Retry-After": str(retry_after)})
