from __future__ import annotations

import asyncio
import functools
import weakref

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.auth import CurrentUser, Principal, user_key
from api.deps import json_body
from api.schemas import PostAccepted, PostIn, PostsBatchIn, PostsBatchResult
from config.settings import get_settings
from celery_floodgate import guard_for
from tasks.demo.errors import Forbidden
from tasks.demo.handoff import FANOUT, admit, publish_then_store_many, store

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
    thread or a round trip; a few threads at a time publish, and a few store (``slots``).

    The key check and the body's validation are called here rather than declared as
    ``me: CurrentUser`` and ``body: PostIn``, in the same order FastAPI would run them:
    FastAPI's resolution of the two cost a refusal about 20 µs (bench/RESULTS.md, auth).

    The post is admitted as its author (the tenant: the user's name) and the body's
    ``criticality`` (celery_floodgate.fairness), so a user over its share of the queue is
    refused while the others are still admitted.
    """
    me = await user_key(request)
    body = await json_body(request, PostIn)
    tenant = allowed_tenant(me, body.criticality)
    refuse_if_remembered(tenant, body.criticality)
    async with slots("admit"):
        # again: the broker may have refused while this waited
        refuse_if_remembered(tenant, body.criticality)
        job_id = await run_in_threadpool(admit, tenant, body.criticality)
    async with slots("store"):
        accepted = await run_in_threadpool(store, me.user_id, body.text, job_id)
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


_slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def slots(step: str) -> asyncio.Semaphore:
    """A few threads at a time admit (publish), and a few store; the other requests wait
    on the event loop.

    Each of those threads gives the GIL up at every round trip and waits for it again
    behind every other runnable thread and the event loop, so forty threads (Starlette's
    default) made each post's handful of round trips take hundreds of milliseconds
    under overload, and refusals answered from threads with them (bench (f)). Admission
    has slots of its own, so that a refusal never waits behind the posts being stored.
    """
    loop = asyncio.get_running_loop()  # a semaphore belongs to one event loop
    per_loop = _slots.get(loop)
    if per_loop is None:
        n = get_settings().api_store_threads
        per_loop = _slots[loop] = {"admit": asyncio.Semaphore(n), "store": asyncio.Semaphore(n)}
    return per_loop[step]


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
def post_posts_batch(body: PostsBatchIn, me: CurrentUser, response: Response):
    """Queue many of the caller's posts' fan-outs in one batch publish, then store the
    admitted ones.

    As ``POST /posts``, per item: admission first (one broker round trip for the
    whole batch), then the admitted posts and jobs in one transaction; a refused
    item leaves nothing behind. 202 when all were accepted, 207 when some were
    refused, 503 when all were; ``Retry-After`` whenever one was refused. Every post
    is admitted as the caller and the batch's ``criticality``, as ``POST /posts``.
    """
    tenant = allowed_tenant(me, body.criticality)
    outcome = publish_then_store_many([(me.user_id, p.text) for p in body.posts],
                                      tenant=tenant, criticality=body.criticality)
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
