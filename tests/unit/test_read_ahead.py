"""The RabbitMQ transport's read-ahead: the same frames as py-amqp's, from fewer reads."""
import random
import socket
import struct
import threading
import time

import pytest
from amqp.transport import TCPTransport

from celery_floodgate.transports.amqp import Connection, ReadAheadTCPTransport


def frame(channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


def attached(cls):
    """A transport of ``cls`` on one end of a socket pair, and the other end."""
    ours, broker = socket.socketpair()
    transport = cls("127.0.0.1:1")
    transport.sock = ours
    transport._setup_transport()
    return transport, broker


def counting_recv(transport) -> list[int]:
    calls, recv = [], transport._quick_recv

    def counted(size, *flags):
        calls.append(size)
        return recv(size, *flags)

    transport._quick_recv = counted
    return calls


FRAMES = [frame(1 + i % 3, random.Random(i).randbytes(size))
          for i, size in enumerate([0, 1, 12, 300, 4000, 70_000, 5])]


def test_frames_read_ahead_equal_py_amqps_from_fewer_reads():
    seen = {}
    for cls in (TCPTransport, ReadAheadTCPTransport):
        transport, broker = attached(cls)
        calls = counting_recv(transport)
        broker.sendall(b"".join(FRAMES))
        seen[cls] = ([transport.read_frame() for _ in FRAMES], len(calls))
        transport.sock.close()
        broker.close()
    frames, reads = seen[ReadAheadTCPTransport]
    assert frames == seen[TCPTransport][0]
    assert [payload for _, _, payload in frames] == [f[7:-1] for f in FRAMES]
    assert reads < seen[TCPTransport][1] / 3  # py-amqp: three reads a frame


def test_a_timeout_inside_a_header_loses_nothing():
    """A read that would block inside a frame header times out (py-amqp's rule), and the
    bytes already taken are read again with the rest."""
    transport, broker = attached(ReadAheadTCPTransport)
    broker.sendall(FRAMES[3][:5])
    with pytest.raises(socket.timeout), transport.having_timeout(0):
        transport.read_frame()
    broker.sendall(FRAMES[3][5:] + FRAMES[4])
    with transport.having_timeout(1):
        frames = [transport.read_frame(), transport.read_frame()]
    assert [payload for _, _, payload in frames] == [FRAMES[3][7:-1], FRAMES[4][7:-1]]
    assert transport._read_buffer == b""


def test_frames_arriving_in_uneven_pieces_are_read_whole():
    transport, broker = attached(ReadAheadTCPTransport)
    data, rng = b"".join(FRAMES), random.Random(7)

    def feed():
        at = 0
        while at < len(data):
            step = rng.randint(1, 9000)
            broker.sendall(data[at:at + step])
            at += step
            time.sleep(0.001)

    feeder = threading.Thread(target=feed)
    feeder.start()
    with transport.having_timeout(5):
        frames = [transport.read_frame() for _ in FRAMES]
    feeder.join()
    assert [payload for _, _, payload in frames] == [f[7:-1] for f in FRAMES]


def test_plain_connections_read_ahead_and_tls_ones_keep_py_amqps_transport():
    connection = Connection.__new__(Connection)
    plain = connection.Transport("127.0.0.1:1", 1.0, False, None, None, socket_settings=None)
    assert type(plain) is ReadAheadTCPTransport
    tls = connection.Transport("127.0.0.1:1", 1.0, {"cert_reqs": 0}, None, None,
                               socket_settings=None)
    assert not isinstance(tls, ReadAheadTCPTransport)
