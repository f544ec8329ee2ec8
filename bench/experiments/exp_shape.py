"""(shape) Where a confirmed RabbitMQ publish spends CPU: the message format or the send path.

    python -m bench.experiments.exp_shape [--n 2000] [--rounds 5]

Three ways to put one persistent message on Floodgate's ``fanout`` queue (version 2,
bounded as install() bounds it) in the bench vhost, each waiting for its confirm:

* **floodgate send_task**: the product's path, ``app.send_task`` (Celery, kombu, the guard).
* **celery message, bare py-amqp**: the same message (one sent by ``send_task`` and read
  back; a fresh id and sent-at header each), published by py-amqp alone.
* **dramatiq message, bare py-amqp**: what Dramatiq's RabbitMQ broker publishes for the
  same task (``Message.encode()``, delivery mode 2, no headers). Both bare ways publish
  to Celery's ``fanout`` exchange, so only the message differs.

The first two differ only in the client's path; the last two only in the format. Per
publish: the client's CPU, RabbitMQ's CPU (beam.smp, /proc) and the bytes it received.
Rounds alternate the order; medians are printed. The queue is purged after each way.

Then, in this process, the client CPU of one ``send_task`` with the layers under it
stubbed out in turn (py-amqp's publish and confirm, then kombu's ``Producer.publish``),
and of each ``app.conf`` read ``send_task`` makes.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import time

from bench.experiments.exp_peers import _cpu_s, server_pids
from bench.harness.env import ensure_vhost, phase_env

QUEUE = "fanout"


def _celery_message(app):
    """The message send_task publishes, read back from the queue (so never run)."""
    app.send_task("peers.incr", queue=QUEUE, ignore_result=True)
    with app.connection_for_write() as conn:
        message = conn.default_channel.basic_get(QUEUE, no_ack=True)
    return message


def bare_sender(app, vhost: str):
    """A publish of Celery's message by py-amqp alone, each with a fresh id and sent-at
    header, waiting for its confirm; and a close. What send_task adds is measured against it."""
    import amqp
    from kombu.utils.uuid import uuid

    from celery_floodgate.transports.redis import SENT_AT_HEADER

    template = _celery_message(app)
    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest",
                           virtual_host=vhost, confirm_publish=True)
    conn.connect()
    channel = conn.channel()

    def send():
        task_id, properties = uuid(), dict(template.properties)
        properties["application_headers"] = {
            **properties["application_headers"], "id": task_id, "root_id": task_id,
            SENT_AT_HEADER: time.time()}
        properties["correlation_id"] = task_id
        channel.basic_publish(amqp.Message(template.body, **properties), exchange=QUEUE,
                              routing_key=QUEUE)

    return send, channel, conn.close


def _dramatiq_message():
    import amqp
    import dramatiq

    body = dramatiq.Message(queue_name="peers", actor_name="peers_incr", args=(), kwargs={},
                            options={}).encode()
    return amqp.Message(body, delivery_mode=2)


def run(n: int = 2000, rounds: int = 5) -> dict:
    ensure_vhost()
    os.environ.update(phase_env("amqp", f"{QUEUE}=1000000"))
    from config import app

    app.conf.task_send_sent_event = False
    producer = app.amqp.Producer(app.connection_for_write(), auto_declare=True)
    vhost = os.environ["BROKER_URL"].rsplit("/", 1)[1]
    celery_bare, channel, close = bare_sender(app, vhost)

    def raw(message):
        return lambda: channel.basic_publish(message, exchange=QUEUE, routing_key=QUEUE)

    ways = {
        "floodgate send_task": lambda: app.send_task("peers.incr", queue=QUEUE,
                                                     ignore_result=True, producer=producer),
        "celery message, bare py-amqp": celery_bare,
        "dramatiq message, bare py-amqp": raw(_dramatiq_message()),
    }
    names = list(ways)
    per: dict[str, list[dict]] = {w: [] for w in names}
    try:
        for r in range(rounds):
            for way in names[r % 3:] + names[:r % 3]:
                per[way].append(_measure(ways[way], n, channel))
        pieces = [send_path_pieces(ways[names[0]], n) for _ in range(rounds)]
        conf = {key: _cpu_us(lambda k=key: getattr(app.conf, k), 20 * n) for key in CONF_READS}
    finally:
        channel.queue_purge(QUEUE)
        close()
        producer.connection.release()
    medians = {w: {k: statistics.median(x[k] for x in xs) for k in xs[0]} for w, xs in per.items()}
    return {"ways": medians, "conf_read_us": conf,
            "pieces": {k: statistics.median(p[k] for p in pieces) for k in pieces[0]}}


#: What Celery's send_task reads from app.conf on every call (counted on Celery 5.7).
CONF_READS = ("task_always_eager", "task_send_sent_event", "broker_pool_acquire_timeout")


def send_path_pieces(send, n: int) -> dict:
    """Client CPU µs of one send_task, then with the layers under it stubbed out in turn:
    py-amqp's publish and confirm, then kombu's Producer.publish too (nothing is sent)."""
    import amqp.channel
    from kombu import Producer

    out = {"send_task": _cpu_us(send, n)}
    with _stubbed(amqp.channel.Channel, "basic_publish_confirm"):
        out["without py-amqp's publish and confirm"] = _cpu_us(send, n)
        with _stubbed(Producer, "publish"):
            out["without kombu's Producer.publish too"] = _cpu_us(send, n)
    return out


@contextlib.contextmanager
def _stubbed(cls, name: str):
    original = cls.__dict__[name]
    setattr(cls, name, lambda self, *args, **kwargs: None)
    try:
        yield
    finally:
        setattr(cls, name, original)


def _cpu_us(fn, n: int) -> float:
    fn()
    cpu = time.process_time()
    for _ in range(n):
        fn()
    return 1e6 * (time.process_time() - cpu) / n


def _measure(send, n: int, channel) -> dict:
    for _ in range(50):
        send()
    beam = server_pids()["rabbitmq"]
    octets = _received_octets()  # rabbitmqctl works inside the broker: outside the window
    wall, cpu, broker = time.perf_counter(), time.process_time(), _cpu_s(beam)
    for _ in range(n):
        send()
    broker = _cpu_s(beam) - broker
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    octets = _received_octets() - octets
    channel.queue_purge(QUEUE)
    return {"wall_us": 1e6 * wall / n, "client_cpu_us": 1e6 * cpu / n,
            "rabbitmq_cpu_us": 1e6 * broker / n, "bytes_in": octets / n}


def _received_octets() -> int:
    """Bytes RabbitMQ received on all connections so far (rabbitmqctl list_connections)."""
    out = subprocess.run(["rabbitmqctl", "-q", "list_connections", "recv_oct",
                          "--no-table-headers"], capture_output=True, text=True, timeout=60,
                         check=False)
    return sum(int(x) for x in out.stdout.split() if x.isdigit())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.experiments.exp_shape")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    result = run(args.n, args.rounds)
    print(f"per confirmed publish, medians of {args.rounds} rounds of {args.n}:\n")
    print("| way | wall µs | client CPU µs | RabbitMQ CPU µs | bytes in |\n|---|---|---|---|---|")
    for way, v in result["ways"].items():
        print(f"| {way} | {v['wall_us']:.0f} | {v['client_cpu_us']:.0f} | "
              f"{v['rabbitmq_cpu_us']:.0f} | {v['bytes_in']:.0f} |")
    print("\nclient CPU µs of one send_task, layers stubbed out in turn (medians):")
    for piece, us in result["pieces"].items():
        print(f"  {piece}: {us:.0f}")
    print("app.conf reads send_task makes, µs each: "
          + ", ".join(f"{k} {v:.1f}" for k, v in result["conf_read_us"].items()))


if __name__ == "__main__":
    main()
