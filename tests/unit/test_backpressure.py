"""The back-pressure package alone: no side effects on import, install()'s checks and
effects, and the guard's and meter's arithmetic. No network."""
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from celery import Celery

from celery_floodgate import EtaTooFar, NotInstalled, install, parse_limits
from celery_floodgate.guard import Guard, clamp, room, wait_bound
from celery_floodgate.limits import (
    RETRY_AFTER_MAX_S,
    RETRY_AFTER_UNMEASURED_S,
    WAIT_LIMIT_BOOTSTRAP_LENGTH,
    Keys,
    Limit,
)
from celery_floodgate.meter import busy_rate
from celery_floodgate.transports import GUARD_OPTION


def test_importing_the_package_changes_nothing_and_needs_no_environment():
    probe = """
import json, sys
from kombu.transport import TRANSPORT_ALIASES
before = dict(TRANSPORT_ALIASES)
from celery import current_app
import celery_floodgate
print(json.dumps({
    "aliases_unchanged": dict(TRANSPORT_ALIASES) == before,
    "current_app": current_app.main,
    "loaded": sorted(m for m in sys.modules if m.split('.')[0] in ('config', 'sqlalchemy')
                     or m.startswith(('tasks.demo', 'tasks.runtime'))),
}))
"""
    out = subprocess.run([sys.executable, "-c", probe], env={"PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True, cwd=_root())
    seen = json.loads(out.stdout)
    assert seen == {"aliases_unchanged": True, "current_app": "default", "loaded": []}


def shop(broker="redis://127.0.0.1:1/0", **conf) -> Celery:
    app = Celery("shop", broker=broker, set_as_current=False)
    app.conf.update(task_routes={"shop.email": {"queue": "emails"},
                                 "shop.report": {"queue": "reports"}}, **conf)
    return app


def test_install_bounds_only_the_app_it_is_given():
    app, other = shop(), shop()
    guard = install(app, {"emails": 500, "reports": "30s"}, "redis://127.0.0.1:1/1")
    assert app.conf.broker_transport == "celery_floodgate.transports.redis:Transport"
    assert app.conf.broker_transport_options[GUARD_OPTION] == guard.id
    assert guard.limits == {"emails": Limit("emails", length=500),
                            "reports": Limit("reports", wait_s=30.0)}
    assert other.conf.broker_transport is None and not other.conf.broker_transport_options


def test_install_declares_what_rabbitmq_needs():
    app = shop("amqp://guest:guest@127.0.0.1:1//")
    install(app, {"emails": 500, "reports": 20})
    args = {q.name: q.queue_arguments for q in app.conf.task_queues}
    assert args["emails"] == {"x-max-length": 500, "x-overflow": "reject-publish",
                              "x-queue-type": "classic", "x-queue-version": 2}
    assert args["reports"]["x-max-length"] == 20
    assert app.conf.broker_transport_options["confirm_publish"] is True


def test_queue_version_is_classic_only_and_an_apps_own_wins():
    from kombu import Queue

    quorum = shop("amqp://guest:guest@127.0.0.1:1//")
    install(quorum, {"emails": 5, "reports": 5}, rabbitmq_queue_type="quorum")
    assert all("x-queue-version" not in q.queue_arguments for q in quorum.conf.task_queues)

    default = shop("amqp://guest:guest@127.0.0.1:1//")
    install(default, {"emails": 5, "reports": 5}, rabbitmq_queue_version=None)
    assert all("x-queue-version" not in q.queue_arguments for q in default.conf.task_queues)

    own = shop("amqp://guest:guest@127.0.0.1:1//",
               task_queues=[Queue("emails", queue_arguments={"x-queue-version": 1})])
    install(own, {"emails": 5, "reports": 5})
    versions = {q.name: q.queue_arguments["x-queue-version"] for q in own.conf.task_queues}
    assert versions == {"emails": 1, "reports": 2}


@pytest.mark.parametrize("limits, unbounded, problem", [
    ({"emails": 5, "reports": 5, "invoices": 5}, (), "'invoices', which the app never routes to"),
    ({"emails": 5}, (), "routes to 'reports' without a limit"),
    ({"emails": "lots", "reports": 5}, (), "limit for 'emails' is 'lots'"),
    ({"emails": 0, "reports": 5}, (), "whole number 1.."),
])
def test_install_refuses_limits_that_do_not_fit_the_app_with_a_sentence(limits, unbounded, problem):
    with pytest.raises(NotInstalled, match=problem):
        install(shop(), limits, "redis://127.0.0.1:1/1", unbounded=unbounded)


def test_a_queue_can_be_left_unbounded_on_purpose():
    guard = install(shop(), {"emails": 5}, "redis://127.0.0.1:1/1", unbounded=["reports"])
    assert set(guard.limits) == {"emails"}


def test_wait_limits_need_redis_and_a_meter():
    with pytest.raises(NotInstalled, match="need the Redis broker"):
        install(shop("amqp://guest:guest@127.0.0.1:1//"), {"emails": "5s", "reports": 5},
                "redis://127.0.0.1:1/1")
    with pytest.raises(NotInstalled, match="need meter_url"):
        install(shop("memory://"), {"emails": "5s", "reports": 5}, allow_unguarded=("memory",))


def test_limits_parse_from_a_mapping_or_from_text():
    assert parse_limits("emails=500, reports=2.5s") == parse_limits({"emails": 500, "reports": "2.5s"})
    with pytest.raises(ValueError, match="not queue=length"):
        parse_limits("emails:500")


class FakeMeter:
    keys, client, url = Keys("test"), None, None

    def __init__(self, rate=None, held=0):
        self.rate, self.held = rate, held

    def drain_rate(self, queue):
        return self.rate

    def held_by_workers(self, queue, broker):
        return self.held


def guard(rate=None, held=0, **limits) -> Guard:
    return Guard(parse_limits(limits or {"q": 100}), FakeMeter(rate, held), "redis",
                 max_countdown_s=600)


def test_a_wait_limit_follows_the_drain_rate_and_bootstraps_while_it_is_unknown():
    assert wait_bound(5, None) == WAIT_LIMIT_BOOTSTRAP_LENGTH
    assert wait_bound(5, 40) == 200 and wait_bound(5, 0.01) == 1
    assert guard(rate=40, q="5s").length_bound(Limit("q", wait_s=5)) == 200


def test_prefetched_messages_leave_less_room_but_never_below_half_the_bound():
    assert room(200, 16) == 184 and room(200, 500) == 100
    assert guard(held=30).room_in_broker("q", "b", 100) == 70


def test_retry_after_is_clamped_and_short_while_the_rate_is_unknown():
    assert clamp(0.01) == 1 and clamp(4.2) == 5 and clamp(1e9) == RETRY_AFTER_MAX_S
    assert guard(rate=None).retry_after_s("q", 150, 100) == RETRY_AFTER_UNMEASURED_S
    full = guard(rate=None).refuse("q", 100, 100, wait_s=7.5)
    assert (full.depth, full.limit, full.retry_after_s) == (100, 100, 8)


def test_the_drain_rate_counts_backlogged_seconds_and_believes_a_drop_at_once():
    assert busy_rate([100, 100, 100, 100, 100]) == 100
    assert busy_rate([100, 100, 100, 50, 50]) == 50  # a worker stopped: the last 2 s win
    assert busy_rate([50, 50, 50, 100, 100]) == 70  # a rise counts once it has lasted
    assert busy_rate([0, 1, 0, 0, 0, 0, 0]) == pytest.approx(1 / 7)  # long tasks: every second


def test_a_countdown_the_broker_would_deliver_twice_is_refused():
    g = guard()
    soon = (datetime.now(timezone.utc) + timedelta(seconds=60)).isoformat()
    g.check_eta("q", soon)
    later = (datetime.now(timezone.utc) + timedelta(seconds=900)).isoformat()
    with pytest.raises(EtaTooFar, match="would be delivered twice"):
        g.check_eta("q", later)


def _root() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[2])


def test_a_broker_refusal_is_remembered_for_one_drain_interval_with_tickets_down_the_line():
    import time

    from celery_floodgate.memo import MEMO_MAX_S, RefusalMemo

    memo = RefusalMemo()
    memo.remember("q", 100, 100, wait_s=2.0, rate=None)
    assert memo.refusal("q") is None  # no measured rate: nothing is remembered
    memo.remember("q", 100, 100, wait_s=2.0, rate=50)  # one slot every 20 ms
    first, second = memo.refusal("q"), memo.refusal("q")
    assert first[:2] == (100, 100) and 2.0 < first[2] <= 2.03
    assert second[2] - first[2] == pytest.approx(0.02, abs=0.005)
    assert memo.take_pending("q") == 2 and memo.take_pending("q") == 0
    time.sleep(min(1 / 50, MEMO_MAX_S) + 0.005)
    assert memo.refusal("q") is None  # the interval is over: ask the broker again


def test_an_admission_forgets_a_remembered_refusal_at_once():
    from celery_floodgate.memo import RefusalMemo

    memo = RefusalMemo()
    memo.remember("q", 100, 100, wait_s=1.0, rate=1)  # would be remembered for 50 ms
    assert memo.refusal("q") is not None
    memo.admitted("q")  # the broker took one after all: the queue has room
    assert memo.refusal("q") is None
