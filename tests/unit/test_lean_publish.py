"""The publish path install() gives an app (lib/src/celery_floodgate/transports/lean.py): a queue
is declared once per connection, as kombu would, and Flower sees the args it always saw."""
import collections
import enum

import pytest
from celery import Celery
from celery.signals import before_task_publish
from celery.utils.saferepr import saferepr

from celery_floodgate import install
from celery_floodgate.transports.lean import plain_repr

FLAT = [(), {}, ("a@example.com", 0.02), [1, -2, None, True], {"n": 1, "to": "x y"},
        (10**30, 1e-9, float("inf"))]
Color = enum.Enum("Color", {"RED": "red"}, type=str)
Level = enum.IntEnum("Level", {"ONE": 1})
Point = collections.namedtuple("Point", "x y")
NOT_FLAT = [("it's",), ("é",), ("a\nb",), ("back\\slash",), ([1],), {"k": {"deep": 1}},
            {1: "int key"}, (b"bytes",), ("x" * 2000,),
            # subclasses have a repr of their own, which saferepr does not use
            (Color.RED,), (Level.ONE,), Point(1, 2), collections.OrderedDict(a=1)]


@pytest.mark.parametrize("value", FLAT)
def test_flat_plain_args_read_as_saferepr_writes_them(value):
    assert plain_repr(value, 1024) == saferepr(value, 1024)


@pytest.mark.parametrize("value", NOT_FLAT)
def test_anything_else_is_left_to_saferepr(value):
    assert plain_repr(value, 1024) is None


def test_a_queue_is_declared_once_per_connection_and_the_headers_keep_celerys_reprs():
    app = Celery("shop", broker="memory://", set_as_current=False)
    app.conf.task_routes = {"shop.email": {"queue": "emails"}}
    install(app, {"emails": 50}, allow_unguarded=("memory",))  # memory:// is never bounded
    seen = []

    def publishing(declare=None, headers=None, **_):
        seen.append((len(declare), headers["argsrepr"], headers["kwargsrepr"]))

    before_task_publish.connect(publishing, weak=False)
    deep = ([1, {"deep": ("x",)}],)
    try:
        with app.connection_for_write() as conn:
            producer = app.amqp.Producer(conn)
            app.send_task("shop.email", ("a@example.com", 0.02), {"n": 1}, producer=producer)
            app.send_task("shop.email", deep, producer=producer)
        with app.connection_for_write() as conn:  # a new connection declares again
            app.send_task("shop.email", producer=app.amqp.Producer(conn))
            assert conn.default_channel.queue_declare("emails", passive=True).message_count == 3
    finally:
        before_task_publish.disconnect(publishing)
    assert seen == [
        (1, saferepr(("a@example.com", 0.02)), saferepr({"n": 1})),
        (0, saferepr(deep), "{}"),
        (1, "()", "{}"),
    ]
