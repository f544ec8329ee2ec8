"""Canaries: every private or undocumented name of Celery, kombu, py-amqp and redis-py
the library reaches, checked on the installed releases, so the compatibility matrix
(lib/noxfile.py) fails on the release that moves one.

Each check is on the real class (``hasattr``, ``inspect.signature``), on a real object
where the name is set per instance, or, for a behaviour the library relies on inside a
method it overrides, on that method's source. The names, by where the library uses them:

Celery
  * ``Celery._preconf``, ``_config_source``, ``_pending_defaults``, ``configured`` (binding),
    ``Celery._get_backend``/``_backend``/``backend_cls``/``loader``,
    ``celery.app.backends.by_url(backend, loader)``, ``RedisBackend.apply_chord(
    header_result_args, body)``/``get_key_for_group(group_id, key)``/``ensure`` (results).
  * ``Celery._tasks`` (install.routed_queues, batch._route/_prepare), ``Celery.amqp_cls``
    (install._guard_amqp_helper), ``Celery.thread_oid``, ``Celery.pool.limit`` (batch,
    transports.producers).
  * ``Task._get_exec_options()`` (batch).
  * ``celery.app.amqp.AMQP``: ``task_protocols`` (rebound by install),
    ``create_task_message``/``send_task_message``/``queues``/``router`` (cached
    properties install drops), ``_create_task_sender()`` and the parameters of the
    sender it returns (transports.lean), ``as_task_v2``'s positional order
    (batch._prepare passes 21 positionally) and its ``argsrepr``/``kwargsrepr``/
    ``ignore_result`` keywords (lean, batch), ``argsrepr_maxsize``/``kwargsrepr_maxsize``,
    ``_producer_pool``/``producer_pool``/``publisher_pool``, ``Connection``/
    ``BrokerConnection``, ``Router`` (transports.producers).
  * ``celery.app.routes.Router.route(options, name, args, kwargs, task_type)`` (batch).
  * The worker's ``Consumer`` (sender of ``worker_ready``/``task_received``):
    ``hostname``, ``qos``, ``initial_prefetch_count``, ``connection``; ``Request.delivery_info``
    (worker.py).

kombu
  * ``kombu.transport.redis.Channel`` (subclassed by transports.redis/redis_consume):
    ``_put``, ``_q_for_pri``, ``priority_steps``, ``_get_message_priority(message,
    reverse)``, ``_connparams``, ``_create_client``, ``_brpop_start``, ``_brpop_read``,
    ``_queue_cycle`` (``rotate``, ``consume``), ``_in_poll``, ``_closing``, ``_size``
    (stats.ready), ``_inplace_augment_message`` (batch), ``conn_or_acquire``,
    ``ack_emulation``, ``global_keyprefix``, ``unacked_key``, ``unacked_index_key``,
    ``active_queues``, ``connection_errors``, ``sep``, ``client``, ``pool``,
    ``qos``/``_qos``, ``QoS``, ``close``;
    ``_flush_brpop_reauth`` where kombu's own ``_brpop_read`` calls it (kombu >= 5.7);
    the module's ``dumps`` and ``Empty``.
  * ``kombu.transport.redis.QoS`` (subclassed by BatchQoS): ``_delivered``, ``_dirty``,
    ``_flush``, ``_quick_append``, ``_quick_ack``, ``append``, ``ack``,
    ``restore_by_tag(tag, client, leftmost)``, ``restore_unacked(client)``,
    ``restore_unacked_once(stderr)``, ``restore_visible``, ``can_consume_max_estimate``,
    ``visibility_timeout``, ``unacked_key``, ``unacked_index_key``.
  * ``kombu.transport.virtual.Transport._deliver(message, queue)`` (redis_consume).
  * ``kombu.transport.pyamqp``: ``Channel.basic_publish_confirm``, ``Connection.Transport``
    (host, connect_timeout, ssl, read_timeout, write_timeout, socket_settings),
    ``Connection.Channel``, ``Transport.Connection``.
  * ``kombu.transport.SQS.Channel`` (transports.sqs): ``_put``, ``basic_ack``,
    ``_message_to_python(message, queue_name, q_url)``, ``_noack_queues``, ``_new_queue``,
    ``sqs(queue=)``, ``canonical_queue_name``, ``endpoint_url``, ``transport_options``;
    ``_delete_rejected_message`` and ``_has_redrive_policy(queue, queue_url)`` where kombu's
    ``basic_reject`` deletes a rejected message (kombu >= 5.7; before, it deletes nothing).
  * ``kombu.connection.PooledConnection(pool, ...)`` (kombu >= 5.5), ``ConnectionPool.new``,
    ``Connection._init_params``, ``_info(resolve)``, ``Pool(limit)``, ``alt``, the
    transport's ``default_port`` (binding, transports.sentinel);
    ``kombu.transport.redis.SentinelChannel`` (``_connparams``, ``_sentinel_managed_pool``,
    ``min_other_sentinels``, ``sentinel_kwargs``, ``master_name``), ``SentinelTransport``;
    ``kombu.utils.url.url_to_parts``/``parse_ssl_cert_reqs`` (redis_client).
  * ``kombu.Connection``: ``_reraise_as_library_errors`` (batch), ``connection``,
    ``_connection`` (batch), ``declared_entities`` (lean), ``transport_cls``,
    ``as_uri(include_password, mask)``, ``collect``, ``transport_options``.
  * ``kombu.common.maybe_declare`` caches by ``hash(entity)`` in
    ``connection.client.declared_entities`` when ``entity.can_cache_declaration`` (lean).
  * ``kombu.pools.connections``, ``kombu.pools.ProducerPool(..., Producer=)``,
    ``Producer.release``/``__exit__`` (transports.producers).
  * ``kombu.utils.objects.cached_property``, ``kombu.utils.encoding.bytes_to_str``,
    ``kombu.utils.json.loads``, ``kombu.asynchronous.get_event_loop``,
    ``Hub.call_repeatedly``.

py-amqp
  * ``amqp.transport.TCPTransport`` (subclassed by ReadAheadTCPTransport):
    ``_read(n, initial, _errnos)``, ``_read_buffer`` (read by ``read_frame`` to put back
    a partial frame), ``_quick_recv`` (set by ``_setup_transport``), ``raise_on_initial_eintr``.
  * ``amqp.Channel``: ``_basic_publish``, ``_confirm_selected``, ``confirm_select``,
    ``events['basic_ack'|'basic_nack']`` (batch._publish_confirmed), ``wait``;
    ``basic_publish_confirm`` takes ``confirm_timeout``; ``amqp.Connection.collect``;
    ``amqp.exceptions.MessageNacked``; ``amqp.spec.Basic.Ack``/``Nack``.

redis-py
  * ``Redis.parse_response(connection, command, **options)`` (redis_consume, as kombu),
    ``Redis.connection_pool``, ``redis.exceptions.NoScriptError``/``ResponseError``.
"""
from __future__ import annotations

import importlib
import inspect

import pytest


def obj(path: str):  # type: ignore[no-untyped-def]
    """``"module:attr.attr"`` -> the object."""
    module, _, attrs = path.partition(":")
    found = importlib.import_module(module)
    for name in filter(None, attrs.split(".")):
        found = getattr(found, name)
    return found


def params(func) -> list[str]:  # type: ignore[no-untyped-def]
    return list(inspect.signature(func).parameters)


def source(func) -> str:  # type: ignore[no-untyped-def]
    return inspect.getsource(func)


#: (class or module, attribute names every supported release must have on it)
ATTRIBUTES = [
    ("celery:Celery", ["amqp_cls", "thread_oid", "pool", "producer_or_acquire",
                       "connection_for_write", "_get_backend", "_backend", "loader"]),
    ("celery.app.backends", ["by_url"]),
    ("celery.backends.redis:RedisBackend", ["apply_chord", "get_key_for_group", "ensure",
                                            "client"]),
    ("celery.app.task:Task", ["_get_exec_options"]),
    ("celery.app.amqp:AMQP", ["create_task_message", "send_task_message", "_create_task_sender",
                              "as_task_v2", "argsrepr_maxsize", "kwargsrepr_maxsize",
                              "_producer_pool", "producer_pool", "publisher_pool", "queues",
                              "router", "Router", "Connection", "BrokerConnection"]),
    ("kombu.transport.redis:Channel", [
        "_put", "_q_for_pri", "priority_steps", "_get_message_priority", "_connparams",
        "_create_client", "_brpop_start", "_brpop_read", "_size", "_inplace_augment_message",
        "conn_or_acquire", "ack_emulation", "global_keyprefix", "unacked_key",
        "unacked_index_key", "sep", "client", "pool", "qos", "QoS", "close"]),
    ("kombu.transport.redis:QoS", [
        "_flush", "append", "ack", "restore_by_tag",
        "restore_unacked", "restore_unacked_once", "restore_visible",
        "can_consume_max_estimate", "unacked_key", "unacked_index_key"]),
    ("kombu.transport.redis", ["dumps", "Empty", "Channel", "QoS", "Transport",
                               "SentinelChannel", "SentinelTransport"]),
    ("kombu.transport.virtual:Transport", ["_deliver"]),
    ("kombu.transport.pyamqp:Channel", ["basic_publish_confirm"]),
    ("kombu.transport.pyamqp:Connection", ["Transport", "Channel", "collect"]),
    ("kombu.transport.pyamqp:Transport", ["Connection"]),
    ("kombu.connection", ["ConnectionPool"]),
    ("kombu.connection:ConnectionPool", ["new"]),
    ("kombu.utils.url", ["url_to_parts", "parse_ssl_cert_reqs"]),
    ("kombu.transport.redis:SentinelChannel", ["_sentinel_managed_pool", "_connparams"]),
    ("kombu.transport.redis:SentinelTransport", ["default_port", "Channel"]),
    ("kombu:Connection", ["_init_params", "_info", "Pool", "_reraise_as_library_errors",
                          "connection", "as_uri", "collect", "default_channel",
                          "ensure_connection", "transport_options", "declared_entities"]),
    ("kombu:Queue", ["can_cache_declaration"]),
    ("kombu:Producer", ["release", "__exit__"]),
    ("kombu.pools", ["connections", "ProducerPool"]),
    ("kombu.utils.objects", ["cached_property"]),
    ("kombu.utils.encoding", ["bytes_to_str"]),
    ("kombu.utils.json", ["loads"]),
    ("kombu.asynchronous", ["get_event_loop"]),
    ("kombu.asynchronous.hub:Hub", ["call_repeatedly"]),
    ("amqp.transport:TCPTransport", ["_read", "_setup_transport", "read_frame"]),
    ("amqp:Channel", ["_basic_publish", "confirm_select", "wait", "basic_publish_confirm"]),
    ("amqp:Connection", ["collect"]),
    ("amqp.exceptions", ["MessageNacked"]),
    ("amqp.spec:Basic", ["Ack", "Nack"]),
    ("redis:Redis", ["parse_response", "evalsha", "eval"]),
    ("redis.exceptions", ["NoScriptError", "ResponseError", "TimeoutError"]),
]


@pytest.mark.parametrize(("where", "names"), ATTRIBUTES, ids=[w for w, _ in ATTRIBUTES])
def test_the_names_the_library_reaches_are_where_it_reaches_them(where: str,
                                                                 names: list[str]) -> None:
    found = obj(where)
    assert [n for n in names if not hasattr(found, n)] == []


#: (callable, the leading parameters the library passes or overrides, in order)
SIGNATURES = [
    ("celery.app.amqp:AMQP.as_task_v2", [
        "self", "task_id", "name", "args", "kwargs", "countdown", "eta", "group_id",
        "group_index", "expires", "retries", "chord", "callbacks", "errbacks", "reply_to",
        "time_limit", "soft_time_limit", "create_sent_event", "root_id", "parent_id",
        "shadow", "chain"]),
    ("celery.app.routes:Router.route", ["self", "options", "name", "args", "kwargs",
                                        "task_type"]),
    ("celery.app.backends:by_url", ["backend", "loader"]),
    ("celery.backends.redis:RedisBackend.apply_chord", ["self", "header_result_args", "body"]),
    ("celery.backends.base:KeyValueStoreBackend.get_key_for_group", ["self", "group_id", "key"]),
    ("kombu:Connection._info", ["self", "resolve"]),
    ("kombu:Connection.Pool", ["self", "limit"]),
    ("kombu.transport.redis:Channel._put", ["self", "queue", "message"]),
    ("kombu.transport.redis:Channel._q_for_pri", ["self", "queue", "pri"]),
    ("kombu.transport.redis:Channel._get_message_priority", ["self", "message", "reverse"]),
    ("kombu.transport.redis:Channel._brpop_start", ["self", "timeout"]),
    ("kombu.transport.redis:Channel._size", ["self", "queue"]),
    ("kombu.transport.redis:Channel._inplace_augment_message",
     ["self", "message", "exchange", "routing_key"]),
    ("kombu.transport.redis:Channel.conn_or_acquire", ["self", "client"]),
    ("kombu.transport.redis:QoS.append", ["self", "message", "delivery_tag"]),
    ("kombu.transport.redis:QoS.ack", ["self", "delivery_tag"]),
    ("kombu.transport.redis:QoS.restore_by_tag", ["self", "tag", "client", "leftmost"]),
    ("kombu.transport.redis:QoS.restore_unacked", ["self", "client"]),
    ("kombu.transport.redis:QoS.restore_unacked_once", ["self", "stderr"]),
    ("kombu.transport.virtual:Transport._deliver", ["self", "message", "queue"]),
    ("kombu:Connection.as_uri", ["self", "include_password", "mask"]),
    ("amqp:Connection.Transport", ["self", "host", "connect_timeout", "ssl", "read_timeout",
                                   "write_timeout", "socket_settings"]),
    ("amqp.transport:TCPTransport._read", ["self", "n", "initial", "_errnos"]),
    ("amqp:Channel._basic_publish", ["self", "msg", "exchange", "routing_key"]),
    ("redis:Redis.parse_response", ["self", "connection", "command_name"]),
]


def test_kombus_pool_makes_pooled_connections_or_clones_as_binding_assumes() -> None:
    """kombu 5.5+ pools make ``PooledConnection(pool, **info)``, which binding.py
    subclasses; before 5.5 they ``clone()`` the connection, which keeps its class."""
    import inspect

    import kombu.connection

    pooled = getattr(kombu.connection, "PooledConnection", None)
    source = inspect.getsource(kombu.connection.ConnectionPool.new)
    if pooled is None:
        assert "self.connection.clone()" in source
    else:
        assert params(pooled.__init__)[:2] == ["self", "pool"]
        assert "PooledConnection(self" in source


@pytest.mark.parametrize(("where", "leading"), SIGNATURES, ids=[w for w, _ in SIGNATURES])
def test_the_parameters_the_library_passes_keep_their_order(where: str,
                                                            leading: list[str]) -> None:
    assert params(obj(where))[:len(leading)] == leading


def test_as_task_v2_takes_the_keywords_the_library_passes() -> None:
    from celery.app.amqp import AMQP

    assert {"argsrepr", "kwargsrepr", "ignore_result"} <= set(params(AMQP.as_task_v2))


def test_an_apps_amqp_helper_has_its_protocols_sender_and_pool_where_install_looks() -> None:
    from celery import Celery

    app = Celery("canary", broker="memory://", set_as_current=False)
    @app.task(name="canary.t")
    def canary() -> None:
        """A task, so that the app has one."""

    assert isinstance(app._tasks, dict)
    assert "canary.t" in app.tasks and app.tasks is app._tasks
    amqp = app.amqp
    assert set(amqp.task_protocols) >= {1, 2}
    assert amqp.task_protocols[2].__func__ is type(amqp).as_task_v2
    # install() drops these from the instance dict to rebind them: they are cached there
    for name in ("queues", "router", "send_task_message", "create_task_message"):
        getattr(amqp, name)
        assert name in amqp.__dict__, name
    sender = amqp._create_task_sender()
    assert {"producer", "name", "message", "queue", "declare", "retry"} <= set(params(sender))
    assert amqp._producer_pool is None
    assert isinstance(app.pool.limit, int)
    assert isinstance(app.thread_oid, str)
    app.close()


def test_the_worker_consumer_carries_what_watch_backlog_reads() -> None:
    from celery.worker.consumer.consumer import Consumer
    from celery.worker.request import Request

    init = source(Consumer.__init__)
    for name in ("self.hostname", "self.initial_prefetch_count", "self.connection"):
        assert name in init, name
    assert hasattr(Consumer, "qos") or "self.qos" in source(Consumer)
    assert hasattr(Request, "delivery_info")
    worker = importlib.import_module("celery.apps.worker")
    assert "worker_ready.send(sender=consumer)" in source(worker)
    strategy = importlib.import_module("celery.worker.strategy")
    assert "task_received.send(sender=consumer, request=req)" in source(strategy)


def test_kombus_redis_brpop_read_does_what_batch_consume_repeats() -> None:
    """BatchConsume._brpop_read repeats kombu's up to the delivery; the steps it copies
    must still be kombu's, or it drifts from kombu (lib/.../redis_consume.py)."""
    from kombu.transport import redis as kombu_redis

    text = source(kombu_redis.Channel._brpop_read)
    for step in ("self.client.parse_response(self.client.connection", "'BRPOP'",
                 "self.client.connection.disconnect()", "rsplit(self.sep, 1)[0]",
                 "self._queue_cycle.rotate(dest)", "self.connection._deliver(",
                 "raise Empty()", "self._in_poll = None"):
        assert step in text, step
    if "_flush_brpop_reauth" in text:  # kombu >= 5.7; the library calls it where it exists
        assert hasattr(kombu_redis.Channel, "_flush_brpop_reauth")


def test_kombus_redis_channel_and_qos_set_what_the_library_reads(project) -> None:
    """A real channel on the suite's Redis, as kombu builds it."""
    from kombu import Connection

    from conftest import meter_url

    with Connection(meter_url(), transport="redis") as conn:
        channel = conn.default_channel
        assert hasattr(channel, "_queue_cycle")
        assert callable(channel._queue_cycle.rotate)
        assert callable(channel._queue_cycle.consume)
        assert channel._in_poll in (None, False)
        assert channel._closing is False
        assert hasattr(channel, "active_queues")
        assert hasattr(channel, "_qos")
        assert isinstance(channel.connection_errors, tuple)
        qos = channel.qos
        assert callable(qos._quick_append) and callable(qos._quick_ack)
        assert isinstance(qos._delivered, dict)
        assert isinstance(qos._dirty, set)
        assert isinstance(qos.visibility_timeout, (int, float))
        assert channel._size("canary-nothing-here") == 0
        assert channel.client.connection_pool is channel.pool or channel.pool is not None


def test_maybe_declare_caches_by_the_entitys_hash_as_lean_publish_assumes() -> None:
    from kombu import common

    text = source(common._maybe_declare)
    assert "entity.can_cache_declaration" in text
    assert "declared_entities" in text
    assert "hash(entity)" in text


def test_producer_pool_takes_a_producer_class() -> None:
    from kombu import Connection, Producer, pools

    class Mine(Producer):
        pass

    with Connection("memory://") as conn:
        assert isinstance(conn.transport_cls, str)
        pool = pools.ProducerPool(pools.connections[conn], limit=1, Producer=Mine)
        producer = pool.acquire()
        try:
            assert isinstance(producer, Mine)
        finally:
            producer.release()
        pool.force_close_all()
        assert hasattr(conn, "_connection")


def test_py_amqp_reads_the_buffer_the_read_ahead_transport_keeps() -> None:
    from amqp.transport import TCPTransport, _AbstractTransport

    assert "self._read_buffer" in source(_AbstractTransport.read_frame)
    assert "self._quick_recv" in source(TCPTransport._setup_transport)
    assert "self._read_buffer" in source(TCPTransport._setup_transport)
    assert "raise_on_initial_eintr" in params(_AbstractTransport.__init__)


def test_py_amqp_channel_has_the_confirm_state_batches_set() -> None:
    from amqp import Channel

    init = source(Channel.__init__)
    assert "self.events" in init and "self._confirm_selected" in init
    assert "self.is_open" in init
    assert "_on_basic_ack" in source(Channel) and "self.events['basic_ack']" in source(Channel)
    assert "self.events['basic_nack']" in source(Channel)
    assert "confirm_timeout" in source(Channel.basic_publish_confirm)


def test_kombus_sqs_channel_has_what_the_sqs_guard_overrides() -> None:
    pytest.importorskip("botocore", reason="kombu's SQS transport needs boto3 (extra sqs)")
    from kombu.transport import SQS

    channel = SQS.Channel
    names = ["_put", "basic_ack", "basic_reject", "_message_to_python", "_new_queue", "sqs",
             "canonical_queue_name", "endpoint_url", "transport_options"]
    assert [n for n in names if not hasattr(channel, n)] == []
    assert params(channel._message_to_python)[:4] == ["self", "message", "queue_name", "q_url"]
    assert "_noack_queues" in source(channel)
    reject = source(channel.basic_reject)
    if "_delete_rejected_message" in reject:  # kombu >= 5.7 deletes a rejected message
        assert params(channel._delete_rejected_message) == ["self", "delivery_tag"]
        assert params(channel._has_redrive_policy) == ["self", "queue", "queue_url"]
    else:  # before, it deletes nothing: the admission stays until the message is gone
        assert "delete_message" not in reject


def test_batch_consumes_copy_of_brpop_read_keeps_every_private_step_of_kombus() -> None:
    """A step kombu adds to ``_brpop_read`` (kombu 5.7's ``_flush_brpop_reauth``) must
    reach the library's copy too, called only where the running kombu has it."""
    import re

    from kombu.transport import redis as kombu_redis

    from celery_floodgate.transports.redis_consume import BatchConsume

    kombus = set(re.findall(r"self\.(_\w+)", source(kombu_redis.Channel._brpop_read)))
    ours = source(BatchConsume._brpop_read)
    assert sorted(n for n in kombus if n not in ours) == []


def test_an_apps_configuration_state_is_where_binding_reads_it() -> None:
    """binding.py tells a configured app by ``_preconf``, ``configured``, ``_config_source``
    and ``_pending_defaults``; results.py swaps ``_get_backend`` and reads ``_backend``."""
    from celery import Celery

    app = Celery("canary", set_as_current=False)
    assert isinstance(app._preconf, dict)
    assert app._config_source is None
    assert len(app._pending_defaults) == 0
    assert app.configured is False
    app.config_from_object({"task_default_queue": "canary"})
    assert app._config_source is not None
    assert app.backend_cls is None
    assert "self._backend = self._get_backend()" in source(type(app).backend.fget)
    app.close()


def test_kombus_connection_keeps_alt_urls_and_its_sentinel_channel_its_options() -> None:
    from kombu import Connection
    from kombu.transport import redis as kombu_redis

    conn = Connection("redis://127.0.0.1:1/0;redis://127.0.0.1:2/0")
    assert conn.alt == ["redis://127.0.0.1:1/0", "redis://127.0.0.1:2/0"]
    assert "hostname" in params(type(conn)._init_params)
    text = source(kombu_redis.SentinelChannel)
    assert "'min_other_sentinels'" in text and "'sentinel_kwargs'" in text
    assert "master_name" in text
