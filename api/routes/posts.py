from __future__ import annotations

import asyncio
import functools
import weakref

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, select

from api import authors
from api.schemas import PostAccepted, PostIn, PostsBatchIn, PostsBatchResult
from config.settings import get_settings
from tasks.demo.db import engine
from celery_floodgate import guard_for
from tasks.demo.handoff import FANOUT, admit, publish_then_store_many, store
from tasks.demo.models import users

router = APIRouter(tags=["posts"])


@router.post(
    "/posts", status_code=202, response_model=PostAccepted,
    responses={503: {"description": "queue full, broker or database down; see Retry-After"}},
)
async def post_post(body: PostIn, response: Response) -> dict:
    """Queue a post's fan-out, then store it on its author's timeline.

    Admission comes first and touches no table, so a 503 for a full queue costs at
    most one broker round trip and leaves nothing behind; a 202 is sent after the
    post and its job are committed (tasks/demo/handoff.py says why that is safe).
    While the broker's last refusal holds (lib/src/celery_floodgate/memo.py), a known
    author's post is refused right here, without a thread or a round trip; a few
    threads at a time publish, and a few store (``slots``).
    """
    known = authors.peek(engine(), body.author) is not None
    refuse_if_remembered(known)
    async with slots("admit"):
        refuse_if_remembered(known)  # again: the broker may have refused while this waited
        author_id, job_id = await run_in_threadpool(_admit, body.author)
    async with slots("store"):
        accepted = await run_in_threadpool(store, author_id, body.text, job_id)
    status_url = f"/jobs/{accepted['job_id']}"
    response.headers["Location"] = status_url
    return {**accepted, "status_url": status_url}


def refuse_if_remembered(known_author: bool) -> None:
    """Raise the remembered refusal; not for an unknown author, who must get a 404."""
    if known_author:
        full = fanout_guard().recent_refusal(FANOUT)
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


def _admit(author: str) -> tuple[int, str]:
    """The author's id (an unknown one is a 404, before anything is published), then the
    admitted job's id."""
    author_id = authors.resolve(engine(), author)
    return author_id, admit()


@functools.cache
def fanout_guard():
    from config import app

    return guard_for(app)


@router.post(
    "/posts:batch", status_code=202, response_model=PostsBatchResult,
    response_model_exclude_none=True,
    responses={207: {"description": "some posts were refused (queue full); see Retry-After",
                     "model": PostsBatchResult},
               422: {"description": "an empty list, too many posts, or a bad item (named)"},
               503: {"description": "every post refused, or broker or database down"}},
)
def post_posts_batch(body: PostsBatchIn, response: Response):
    """Queue many posts' fan-outs in one batch publish, then store the admitted ones.

    As ``POST /posts``, per item: admission first (one broker round trip for the
    whole batch), then the admitted posts and jobs in one transaction; a refused
    item leaves nothing behind. 202 when all were accepted, 207 when some were
    refused, 503 when all were; ``Retry-After`` whenever one was refused.
    """
    ids = author_ids(engine(), [p.author for p in body.posts])
    unknown = [i for i, p in enumerate(body.posts) if p.author not in ids]
    if unknown:
        sentence = "; ".join(f"posts.{i}.author: unknown user {body.posts[i].author!r}"
                             for i in unknown[:10])
        return JSONResponse({"detail": sentence, "errors": [
            {"loc": ["body", "posts", str(i), "author"], "msg": "unknown user"}
            for i in unknown]}, status_code=422)
    outcome = publish_then_store_many([(ids[p.author], p.text) for p in body.posts])
    results, retry_after = [], None
    for i, item in enumerate(outcome):
        full = item.get("refused")
        if full is not None:
            retry_after = full.retry_after_s if retry_after is None else min(
                retry_after, full.retry_after_s)
            results.append({"index": i, "status": "refused", "retry_after_s": full.retry_after_s,
                            "detail": str(full)})
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


def author_ids(eng: Engine, names: list[str]) -> dict[str, int]:
    """Ids of these names (unknown ones absent), in one query for the whole batch."""
    wanted = sorted(set(names))
    with eng.connect() as conn:
        rows = conn.execute(select(users.c.name, users.c.id).where(users.c.name.in_(wanted)))
        return {name: uid for name, uid in rows}
