import pickle

from celery_floodgate import BackpressureError, BrokerUnavailable, QueueFull


def test_queue_full_reads_like_a_sentence_and_carries_its_data():
    err = QueueFull(queue="fanout", depth=1000, limit=1000, retry_after_s=4)
    assert str(err) == "queue 'fanout' is full (1000/1000); retry in 4 s"
    assert (err.queue, err.depth, err.limit, err.retry_after_s) == ("fanout", 1000, 1000, 4)
    assert isinstance(err, BackpressureError)


def test_errors_survive_pickling_between_processes():
    err = pickle.loads(pickle.dumps(QueueFull("default", 5, 5, 2)))
    assert err.retry_after_s == 2 and str(err).startswith("queue 'default' is full")
    down = pickle.loads(pickle.dumps(BrokerUnavailable("fanout", "ConnectionRefusedError")))
    assert down.queue == "fanout" and "ConnectionRefusedError" in str(down)
