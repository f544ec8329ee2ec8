"""The Celery configuration keeps its promises before any worker starts."""
from config import app
from config.queues import PREFETCH, ROUTES, TIME_LIMITS_S


def test_json_only_and_late_acks():
    assert app.conf.accept_content == ["json"] and app.conf.result_accept_content == ["json"]
    assert app.conf.task_serializer == "json" and app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is False


def test_every_routed_task_has_time_limits_below_the_global_cap():
    for name in ROUTES:
        limits = app.conf.task_annotations[name]
        assert limits["soft_time_limit"] < limits["time_limit"] <= app.conf.task_time_limit
    assert set(TIME_LIMITS_S) == set(ROUTES)


def test_every_task_is_routed_to_a_declared_queue():
    declared = {q.name for q in app.conf.task_queues}
    assert {route["queue"] for route in app.conf.task_routes.values()} <= declared
    assert app.conf.task_create_missing_queues is False


def test_prefetch_follows_the_queues_a_worker_consumes():
    from tasks.runtime.prefetch import prefetch_for

    assert app.conf.floodgate_queue_prefetch == PREFETCH
    assert prefetch_for(PREFETCH, ["fanout"]) == PREFETCH["fanout"] > 1
    assert prefetch_for(PREFETCH, ["aggregation"]) == 1
    assert prefetch_for(PREFETCH, ["fanout", "aggregation"]) == 1  # the long queue's wins


def test_an_explicit_prefetch_multiplier_wins_even_when_it_equals_the_default(monkeypatch):
    from types import SimpleNamespace

    from tasks.runtime.prefetch import PerQueuePrefetch

    def consumer_after(argv):
        monkeypatch.setattr("sys.argv", argv)
        queues = SimpleNamespace(consume_from={"fanout": None})
        conf = {"floodgate_queue_prefetch": PREFETCH}
        consumer = SimpleNamespace(prefetch_multiplier=1, initial_prefetch_count=2,
                                   app=SimpleNamespace(amqp=SimpleNamespace(queues=queues),
                                                       conf=conf))
        PerQueuePrefetch(consumer)
        return consumer.prefetch_multiplier

    assert consumer_after(["celery", "worker", "-Q", "fanout"]) == PREFETCH["fanout"]
    assert consumer_after(["celery", "worker", "--prefetch-multiplier", "1"]) == 1
    assert consumer_after(["celery", "worker", "--prefetch-multiplier=1"]) == 1
