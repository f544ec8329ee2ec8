"""``submit_async`` and ``submit_many_async`` on the real broker (FLOODGATE_TEST_BROKER), no
worker: the message a consumer receives is the one ``send_task`` sends, field by field;
the limit holds exactly under concurrent coroutines; a refusal or a cancellation leaves
nothing behind; fair admission answers as the threaded path does."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import redis
from celery import Celery

from celery_floodgate import Fairness, QueueFull, install
from celery_floodgate.aio import close_async, submit_async, submit_many_async
from celery_floodgate.stats import depth
from conftest import PREFIX, broker_kind, broker_url, meter_url, reset_broker, take_queued_ids

LIMIT = 20
#: Differ between two sends of the same call by nature: ids, and when it was sent.
# reply_to is the sending thread's id (app.thread_oid): a pool thread's when the message is
# sent by Celery itself (Celery before celery_floodgate.aio.NATIVE_SINCE).
IDS = {"id", "root_id", "correlation_id", "delivery_tag", "message_id", "reply_to"}
TIMES = {"eta", "expires", "fg_sent_at"}


def run(app: Celery, coroutine: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``coroutine()`` on a fresh event loop, closing the app's async connections."""
    async def main() -> Any:
        try:
            return await coroutine()
        finally:
            await close_async(app)

    return asyncio.run(main())


def take_messages(app: Celery, queue: str) -> dict[str, Any]:
    """Every message waiting in ``queue``, taken off with kombu (no ack), by task id."""
    found = {}
    with app.connection_for_write() as conn:
        bound = app.amqp.queues[queue].bind(conn.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            found[message.headers["id"]] = message
    return found


def assert_same_message(threaded: Any, awaited: Any, sync_id: str, async_id: str) -> None:
    assert threaded.decode() == awaited.decode()  # args, kwargs, callbacks, chain, chord
    assert (threaded.content_type, threaded.content_encoding) == (
        awaited.content_type, awaited.content_encoding)
    for message, task_id in ((threaded, sync_id), (awaited, async_id)):
        assert message.headers["id"] == message.headers["root_id"] == task_id
        assert message.properties["correlation_id"] == task_id
    assert set(threaded.headers) == set(awaited.headers)
    for name, value in threaded.headers.items():
        if name in TIMES:
            assert (value is None) == (awaited.headers[name] is None), name
            if isinstance(value, str):  # an ISO time: the two sends are moments apart
                gap_s = abs((datetime.fromisoformat(value) - datetime.fromisoformat(
                    awaited.headers[name])).total_seconds())
                assert gap_s < 5, name
        elif name not in IDS:
            assert awaited.headers[name] == value, name
    # aiormq gives every publish a message id; ours is the task id, not a random one
    extra = set(awaited.properties) - set(threaded.properties)
    assert extra <= {"message_id"} and awaited.properties.get("message_id", async_id) == async_id
    for name, value in threaded.properties.items():
        if name not in IDS and name != "application_headers":  # headers: compared above
            assert awaited.properties[name] == value, name
    assert threaded.delivery_info.get("routing_key") == awaited.delivery_info.get("routing_key")
    assert threaded.delivery_info.get("exchange") == awaited.delivery_info.get("exchange")


CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any], dict[str, Any]]] = [
    ("plain", (1, 2), {}, {}),
    ("kwargs, countdown, priority, headers", (), {"x": 1, "y": "two"},
     {"countdown": 30, "priority": 5, "headers": {"x-trace": "abc", "n": 3}}),
    ("expires, time limit, routed to another queue", (0.5,), {},
     {"expires": 60, "time_limit": 30, "queue": "celery"}),
]


@pytest.mark.parametrize(("case", "args", "kwargs", "options"), CALLS,
                         ids=[c[0] for c in CALLS])
def test_submit_async_sends_the_message_send_task_sends(project, case: str,
                                                        args: tuple[Any, ...],
                                                        kwargs: dict[str, Any],
                                                        options: dict[str, Any]) -> None:
    app = project.app
    queue = options.get("queue", "bounded")
    sync_id = app.send_task("tasks.add", args, kwargs, **options).id
    async_id = run(app, lambda: submit_async(app, "tasks.add", args, kwargs, **options)).id
    messages = take_messages(app, queue)
    assert set(messages) == {sync_id, async_id}
    assert_same_message(messages[sync_id], messages[async_id], sync_id, async_id)


def test_a_signature_with_a_link_is_sent_as_its_apply_async_sends_it(project) -> None:
    app = project.app
    signature = project.add.s(1).set(priority=3)
    link = project.record.s("done")
    sync_id = signature.apply_async((2,), link=link).id
    async_id = run(app, lambda: submit_async(app, signature, (2,), link=link)).id
    messages = take_messages(app, "bounded")
    assert set(messages) == {sync_id, async_id}
    assert_same_message(messages[sync_id], messages[async_id], sync_id, async_id)
    assert messages[async_id].decode()[2]["callbacks"][0]["task"] == "tasks.record"


def test_the_publish_signals_fire_around_the_async_publish(project) -> None:
    from celery import signals

    seen: list[tuple[str, str]] = []

    def before(headers: dict[str, Any], **_: Any) -> None:
        headers["x-from-signal"] = "yes"  # what tracing libraries do: the worker must see it
        seen.append(("before", headers["id"]))

    def after(headers: dict[str, Any], **_: Any) -> None:
        seen.append(("after", headers["id"]))

    signals.before_task_publish.connect(before, weak=False)
    signals.after_task_publish.connect(after, weak=False)
    try:
        task_id = run(project.app, lambda: submit_async(project.app, "tasks.add", (1, 2))).id
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
    assert seen == [("before", task_id), ("after", task_id)]
    assert take_messages(project.app, "bounded")[task_id].headers["x-from-signal"] == "yes"


def test_exactly_the_limit_is_admitted_under_fifty_concurrent_coroutines(project) -> None:
    app = project.app

    async def fifty() -> list[Any]:
        return await asyncio.gather(*(submit_async(app, project.slow, (0,)) for _ in range(50)),
                                    return_exceptions=True)

    outcomes = run(app, fifty)
    accepted = [o.id for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(accepted) == LIMIT
    assert len(refused) == 50 - LIMIT and all(isinstance(e, QueueFull) for e in refused)
    assert all(e.queue == "bounded" and e.limit == LIMIT and e.retry_after_s >= 1
               for e in refused)
    assert sorted(take_queued_ids(app, "bounded")) == sorted(accepted)


def test_a_refused_submission_leaves_nothing_in_the_queue(project) -> None:
    app = project.app
    admitted = [project.slow.delay(0).id for _ in range(LIMIT)]

    async def refused() -> list[Any]:
        return await asyncio.gather(*(submit_async(app, "tasks.slow", (0,)) for _ in range(10)),
                                    return_exceptions=True)

    outcomes = run(app, refused)
    assert all(isinstance(o, QueueFull) for o in outcomes)
    assert depth(app, "bounded") == LIMIT
    assert sorted(take_queued_ids(app, "bounded")) == sorted(admitted)


def test_submit_many_async_admits_exactly_what_fits_in_order(project) -> None:
    app = project.app
    before = [project.slow.delay(0).id for _ in range(LIMIT - 5)]
    batch = run(app, lambda: submit_many_async(app, "tasks.slow", [(0,)] * 10))
    assert batch.accepted == batch.ids[:5]
    assert [i for i, _ in batch.refused] == list(range(5, 10))
    assert all(isinstance(e, QueueFull) and e.retry_after_s >= 1 for _, e in batch.refused)
    assert sorted(take_queued_ids(app, "bounded")) == sorted(before + batch.accepted)


def test_concurrent_async_batches_never_pass_the_limit_between_them(project) -> None:
    app = project.app

    async def batches() -> list[Any]:
        return await asyncio.gather(*(submit_many_async(app, "tasks.slow", [(0,)] * 7)
                                      for _ in range(6)))

    results = run(app, batches)
    accepted = [task_id for batch in results for task_id in batch.accepted]
    assert len(accepted) == LIMIT
    assert sum(len(batch.refused) for batch in results) == 6 * 7 - LIMIT
    assert sorted(take_queued_ids(app, "bounded")) == sorted(accepted)


# None: cancelled before they start (all cancelled, nothing sent); 0 and later: cancelled
# once their admission is on its way (they finish, and return what the broker decided).
@pytest.mark.parametrize("delay_s", [None, 0, 0.002])
def test_cancelled_submissions_leave_exactly_the_ones_that_returned(project,
                                                                    delay_s: float | None
                                                                    ) -> None:
    app = project.app

    async def cancel_in_flight() -> tuple[list[Any], str]:
        warm = await submit_async(app, "tasks.slow", (0,), queue="celery")
        tasks = [asyncio.create_task(submit_async(app, "tasks.slow", (0,), queue="celery"))
                 for _ in range(200)]
        if delay_s is not None:
            await asyncio.sleep(delay_s)
        for task in tasks:
            task.cancel()
        return await asyncio.gather(*tasks, return_exceptions=True), warm.id

    outcomes, warm_id = run(app, cancel_in_flight)
    returned = [o.id for o in outcomes if not isinstance(o, BaseException)]
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes
               if isinstance(o, BaseException))
    assert sorted(take_queued_ids(app, "celery")) == sorted([warm_id, *returned])
    if delay_s is None:
        assert not returned


# -- fair admission: the async path answers as the threaded one --------------------------

FAIR_QUEUE = "fair"


def fair_app() -> Celery:
    app = Celery("fairasync", broker=broker_url(), set_as_current=False)
    app.conf.update(task_default_queue=FAIR_QUEUE, broker_connection_retry_on_startup=False)
    install(app, {FAIR_QUEUE: 20}, meter_url=meter_url(), key_prefix=f"{PREFIX}-fairasync",
            fairness=Fairness(class_fractions={"sheddable": 0.5, "default": 0.9}))
    return app


#: A noisy tenant, a quiet one, and each class: shares, class bounds and the full limit.
SUBMISSIONS = ([("quiet", "default")] * 2 + [("noisy", "default")] * 12
               + [("quiet", "sheddable")] + [("quiet", "default")] * 7
               + [("other", "critical")] * 3)


def outcome(full: QueueFull | None) -> tuple[Any, ...] | None:
    return None if full is None else (full.reason, full.tenant, full.criticality, full.share,
                                      full.depth, full.limit)


@pytest.fixture
def fair() -> Iterator[Callable[[], Celery]]:
    made: list[Celery] = []

    def make() -> Celery:
        reset_broker()
        made.append(fair_app())
        return made[-1]

    yield make
    for app in made:
        app.close()


@pytest.mark.skipif(broker_kind() != "redis", reason="RabbitMQ's meter is covered by tenants")
def test_fair_admission_through_submit_async_refuses_as_the_threaded_path(fair) -> None:
    app = fair()
    threaded = []
    for tenant, criticality in SUBMISSIONS:
        try:
            app.send_task("fair.job", headers={"tenant": tenant, "criticality": criticality})
            threaded.append(None)
        except QueueFull as full:
            threaded.append(outcome(full))
    assert {o[0] for o in threaded if o} == {"share", "class", "full"}

    app = fair()

    async def submit_all() -> list[Any]:
        found = []
        for tenant, criticality in SUBMISSIONS:
            try:
                await submit_async(app, "fair.job",
                                   headers={"tenant": tenant, "criticality": criticality})
                found.append(None)
            except QueueFull as full:
                found.append(outcome(full))
        return found

    assert run(app, submit_all) == threaded
    client = redis.Redis.from_url(broker_url())
    tenants = [json.loads(raw)["headers"]["tenant"] for raw in client.lrange(FAIR_QUEUE, 0, -1)]
    assert len(tenants) == depth(app, FAIR_QUEUE) == sum(o is None for o in threaded)


def test_what_is_sent_through_celery_in_a_thread_keeps_the_callers_context(
        project, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback pool (here forced: a Celery the async path does not follow) runs the
    send in the caller's context, so its tenant and class go with it."""
    from celery import signals

    from celery_floodgate import aio
    from celery_floodgate.fairness import identify, submitting_as

    monkeypatch.setattr(aio, "NATIVE_SINCE", (99, 0))
    seen: list[tuple[str, str]] = []

    def receiver(**_: Any) -> None:
        seen.append(identify({}))

    async def submit() -> Any:
        with submitting_as("ann", "sheddable"):
            return await submit_async(project.app, "tasks.add", (1, 2))

    signals.before_task_publish.connect(receiver, weak=False)
    try:
        task_id = run(project.app, submit).id
    finally:
        signals.before_task_publish.disconnect(receiver)
    assert seen == [("ann", "sheddable")]
    assert take_queued_ids(project.app, "bounded") == [task_id]
