"""SQS only (FLOODGATE_TEST_BROKER=sqs, on moto servers the session starts): duplicates
have one effect, the admission count survives redelivery and dead workers, and the
reconciler repairs drift. The limit, refusal, 503 and flow tests run on SQS from
test_back_pressure.py, test_faults_api.py and test_flow.py."""
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from celery_floodgate import QueueFull, guard_for
from tasks.demo.models import timeline_entries
from tests import support
from tests.integration.helpers import count, make_following, read_job, timeline_of, wait_for

pytestmark = pytest.mark.skipif(support.broker_kind() != "sqs", reason="SQS only")

FANOUT = "tasks.fanout.fanout_post"
LIMIT = 200  # QUEUE_LIMITS in conftest: fanout=200


def admission(app, queue="fanout"):
    """(redis client, admission set key, SQS client, queue URL) of ``app``'s queue."""
    from celery_floodgate.transports.sqs import admitted_key

    guard = guard_for(app)
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        url = channel._new_queue(queue)
        sqs = channel.sqs()
    return guard.meter.client, admitted_key(guard, url), sqs, url


def sqs_total(sqs, url) -> int:
    from celery_floodgate.transports.sqs import sqs_total as total

    return total(sqs, url)


def raw_messages(sqs, url, n=10, visibility=0):
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=n, VisibilityTimeout=visibility,
                               MessageSystemAttributeNames=["All"]).get("Messages", [])


def test_a_duplicated_fanout_message_has_one_effect(api, celery_session_app, idle_app):
    """SQS delivers at least once: the very same message body arriving twice runs twice,
    and changes the timeline, the job and its chunks once."""
    from tasks.demo import jobs as job_records
    from tasks.demo.db import engine
    from tasks.demo.timeline import create_post

    author, fans = make_following(api, followers=120)  # three chunks of 50
    job_id = str(uuid.uuid4())
    with engine().begin() as conn:
        post = create_post(conn, author.name, "duplicated on SQS")
        job_records.create_job(conn, job_id, "fanout", post["post_id"])
    # The message as the guard sends it, taken from a queue no worker reads...
    idle_app.send_task(FANOUT, args=(job_id, post["post_id"]), task_id=job_id)
    _, _, idle_sqs, idle_url = admission(idle_app)
    [message] = raw_messages(idle_sqs, idle_url, n=1, visibility=60)
    # ... delivered twice to the workers' queue, byte for byte.
    _, key, sqs, url = admission(celery_session_app)
    for _ in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=message["Body"])
    wait_for(lambda: read_job(api, author, f"/jobs/{job_id}")["state"] == "succeeded")
    wait_for(lambda: sqs_total(sqs, url) == 0, message="both copies deleted")
    status = read_job(api, author, f"/jobs/{job_id}")
    assert status["progress"] == {"chunks_done": 3, "chunks_total": 3}
    assert status["result"]["delivered"] == 120
    assert count(timeline_entries, timeline_entries.c.post_id == post["post_id"]) == 121
    for fan in (fans[0], fans[-1]):
        posts = timeline_of(api, fan)
        assert [p["post_id"] for p in posts].count(post["post_id"]) == 1


def consume(app, n, timeout_s=10):
    """Receive up to ``n`` fanout messages through the guarded transport, unacked, as a
    worker holds them (basic_get: no event loop, so the session worker's takes none)."""
    conn = app.connection_for_read()
    channel = conn.channel()
    got, deadline = [], time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        message = channel.basic_get("fanout", no_ack=False)
        if message is None:
            time.sleep(0.05)
        else:
            got.append(message)
    return conn, got


def test_a_visibility_timeout_running_out_mid_task_counts_once(idle_app):
    """The message comes back while its first receiver still holds it: the second
    receipt is flagged redelivered, both deletes count down once, the count never
    goes below what SQS holds."""
    client, key, sqs, url = admission(idle_app)
    idle_app.send_task(FANOUT, args=("x", 0))
    assert client.zcard(key) == 1
    conn, [first] = consume(idle_app, 1)
    assert not first.delivery_info.get("redelivered")
    # The task outlives its visibility timeout: SQS hands the message out again.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first.delivery_tag,
                                  VisibilityTimeout=0)
    conn2, [second] = consume(idle_app, 1)
    assert second.delivery_info.get("redelivered") is True  # tasks/runtime/base.py bounds these
    assert client.zcard(key) == 1  # a redelivery is no new admission
    second.ack()
    first.ack()  # a stale receipt handle: deletes nothing more, counts down nothing more
    assert client.zcard(key) == 0
    assert sqs_total(sqs, url) == 0
    conn.close(), conn2.close()


def test_a_message_whose_worker_died_comes_back_and_counts_once(idle_app):
    client, key, sqs, url = admission(idle_app)
    for _ in range(3):
        idle_app.send_task(FANOUT, args=("x", 0))
    conn, got = consume(idle_app, 3)
    assert len(got) == 3 and client.zcard(key) == 3
    conn.close()  # the worker dies holding them: kombu makes them visible again
    assert client.zcard(key) == 3 and sqs_total(sqs, url) == 3
    for handle in [m.delivery_tag for m in got]:  # or their visibility timeout runs out
        try:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
        except Exception:  # noqa: BLE001 - already released by the close
            pass
    conn, again = consume(idle_app, 3)
    assert len(again) == 3 and client.zcard(key) == 3
    for message in again:
        message.ack()
    assert client.zcard(key) == 0 and sqs_total(sqs, url) == 0
    conn.close()


def test_the_reconciler_repairs_drift_seen_twice(idle_app):
    from celery_floodgate.transports.sqs import Reconciler

    client, key, sqs, url = admission(idle_app)
    for _ in range(3):
        idle_app.send_task(FANOUT, args=("x", 0))
    reconciler = Reconciler(interval_s=3600, lag_s=2)  # driven by hand here
    client.set(f"{key}:reconciling", 1, px=60_000)  # the app's own reconciler stands aside

    # Lost count-downs: ids admitted long ago whose messages SQS no longer holds.
    old = time.time() - 60
    client.zadd(key, {f"lost-{i}": old for i in range(5)})
    client.delete(f"{key}:drift")
    assert reconciler.reconcile(key, url, sqs, client, settle_s=0) == (0, 0, 8)  # seen once
    # Old ids 5, SQS 3: at least 2 of the old are gone (the 3 recent may not be counted yet).
    assert reconciler.reconcile(key, url, sqs, client, settle_s=0) == (2, 0, 6)
    client.zadd(key, {m: old for m in client.zrange(key, 0, -1)})  # every id is old now
    reconciler.reconcile(key, url, sqs, client, settle_s=0)
    assert reconciler.reconcile(key, url, sqs, client, settle_s=0) == (3, 0, 3)
    assert client.zcard(key) == sqs_total(sqs, url) == 3

    # Messages no admission counted (sent around the guard, the Redis lost its data).
    client.delete(key, f"{key}:drift")
    reconciler.reconcile(key, url, sqs, client, settle_s=0)
    assert reconciler.reconcile(key, url, sqs, client, settle_s=0) == (0, 3, 3)
    with pytest.raises(QueueFull):  # the limit counts them again
        for _ in range(LIMIT - 2):
            idle_app.send_task(FANOUT, args=("x", 0))
    assert sqs_total(sqs, url) == LIMIT
    client.delete(f"{key}:reconciling")


def small_app(limit: int):
    """An app on the guard namespace whose fanout holds ``limit``: moto takes ~20 ms a send,
    so a small limit is reached, drained and reached again within seconds."""
    from celery import Celery

    from config.queues import KEY_PREFIX
    from config.settings import get_settings
    from celery_floodgate import install

    app = Celery("floodgate-small", set_as_current=False)
    app.config_from_object("config.celeryconfig")
    app.conf.broker_url = support.broker_url("guard")
    install(app, {"fanout": limit, "aggregation": 10, "default": 10},
            get_settings().meter_redis_url, key_prefix=f"{KEY_PREFIX}-small")
    return app


def test_the_limit_holds_while_workers_drain(idle_app):
    """16 submitters against a consumer deleting as fast as it can: SQS never holds more
    than the limit (moto's counts are exact; bench/experiments/exp_sqs.py measures 1, 8 and 32)."""
    import base64
    import json

    app, limit = small_app(20), 20
    client, key, sqs, url = admission(app)
    stop, peak = time.monotonic() + 4, [0]
    # moto computes a queue's three counts one after the other: a receive between them
    # would count its messages twice (visible, then in flight). Samples and receives
    # take turns; sends and deletes between them can only make a sample read low.
    turns = threading.Lock()

    def submit(_):
        accepted = 0
        while time.monotonic() < stop:
            try:
                app.send_task(FANOUT, args=("x", 0))
                accepted += 1
            except QueueFull:
                time.sleep(0.01)
        return accepted

    def drain():  # a worker: delete, then count down (what the transport's ack does)
        drained = 0
        while time.monotonic() < stop:
            with turns:
                received = raw_messages(sqs, url, n=10, visibility=30)
            for m in received:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                body = json.loads(base64.b64decode(m["Body"]))
                drained += client.zrem(key, body["headers"]["fg_admit_id"])
        return drained

    def sample():
        while time.monotonic() < stop:
            with turns:
                peak[0] = max(peak[0], sqs_total(sqs, url))
            time.sleep(0.02)

    with ThreadPoolExecutor(max_workers=18) as pool:
        drainer, sampler = pool.submit(drain), pool.submit(sample)
        accepted = sum(pool.map(submit, range(16)))
        drained, _ = drainer.result(), sampler.result()
    assert drained and accepted > limit, (drained, accepted)  # the drain made room again
    assert peak[0] <= limit
    assert client.zcard(key) == sqs_total(sqs, url)
    app.close()


def test_a_send_sqs_refuses_takes_its_admission_back(idle_app, monkeypatch):
    from botocore.exceptions import ClientError

    client, key, sqs, url = admission(idle_app)

    def refuse(**_):
        raise ClientError({"Error": {"Code": "InvalidParameterValue", "Message": "no"}},
                          "SendMessage")

    with idle_app.connection_for_write() as conn:
        monkeypatch.setattr(conn.default_channel.sqs(), "send_message", refuse)
        with pytest.raises(Exception):
            conn.default_channel._put("fanout", {"body": "", "properties": {}, "headers": {}})
    assert client.zcard(key) == 0


def test_the_meter_redis_down_refuses_as_broker_unavailable(idle_app, monkeypatch):
    from celery_floodgate import BrokerUnavailable

    guard = guard_for(idle_app)
    monkeypatch.setattr(guard.meter, "_client",
                        redis.Redis(host="127.0.0.1", port=support.free_port(),
                                    socket_connect_timeout=0.2))
    with pytest.raises(BrokerUnavailable, match="admission counter"):
        with idle_app.connection_for_write() as conn:
            conn.default_channel._put("fanout", {"body": "", "properties": {}, "headers": {}})
