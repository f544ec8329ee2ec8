"""Private broker instances for fault tests: their own process, port and data dir.

A fault test kills, stops or blocks *these*, never the shared servers. Every
process is started in a session of its own and signalled by PID (or by the
process group whose leader is the PID we started), never by name.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import amqp
import redis

from tests import support

REDIS_SERVER = "/usr/bin/redis-server"
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # the real scripts, not the su wrapper in /usr/sbin


class BrokerExited(AssertionError):
    """The broker process ended while we waited for it: no point waiting longer."""


def _wait(predicate, timeout_s: float, what: str, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except BrokerExited:
            raise
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        time.sleep(interval_s)
    raise AssertionError(f"{what} within {timeout_s} s (last error: {last_error!r})")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _Logged:
    _log = None

    def _reopen_log(self, path: Path) -> None:
        if self._log is not None:
            self._log.close()
        self._log = open(path, "ab")


class PrivateRedis(_Logged):
    """A redis-server of our own; ``aof=True`` is the documented persistence:
    ``appendonly yes``, ``appendfsync everysec``, ``noeviction``, no RDB snapshots."""

    kind = "redis"

    def __init__(self, base_dir: Path, aof: bool = True) -> None:
        self.dir = Path(base_dir) / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = support.free_port()
        self.aof = aof
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout_s: float = 15) -> None:
        assert not self.running, "already running"
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", "", "--maxmemory-policy", "noeviction",
                "--appendonly", "yes" if self.aof else "no", "--appendfsync", "everysec",
                "--daemonize", "no", "--loglevel", "notice"]
        self._reopen_log(self.dir / "redis.log")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        def answers() -> bool:
            if self.proc.poll() is not None:
                raise BrokerExited(f"redis-server exited: see {self.dir / 'redis.log'}")
            return self.client().ping()  # an error (LOADING) until the AOF is replayed

        _wait(answers, timeout_s, f"redis on {self.port} did not answer")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        """``kill -9`` the redis-server process (the PID we started)."""
        if self.running:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 15) -> None:
        """A clean shutdown (SIGTERM: redis flushes its AOF and exits)."""
        if self.running:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.kill9()
        if self._log:
            self._log.close()

    # -- faults and inspection ---------------------------------------------------------------
    def block(self, seconds: float) -> None:
        """Pause every client command for ``seconds``: the broker is up, accepts
        connections, and answers nothing (a hung Redis)."""
        self.client().execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
        self._paused_until = time.monotonic() + seconds

    def unblock(self) -> None:
        """Wait the pause out: Redis 7.0 pauses CLIENT UNPAUSE itself under PAUSE ALL."""
        time.sleep(max(0.0, getattr(self, "_paused_until", 0) - time.monotonic()))
        _wait(lambda: self.client().ping(), 10, f"redis on {self.port} still paused")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db,
                           socket_timeout=2, socket_connect_timeout=1)

    def queued_messages(self, queue: str, db: int = 0) -> list[bytes]:
        """Every ready message of ``queue`` (kombu's list plus its priority sub-lists)."""
        client = self.client(db)
        payloads: list[bytes] = []
        for key in client.scan_iter(match=f"{queue}*"):
            if key == queue.encode() or key.startswith(queue.encode() + b"\x06\x16"):
                if client.type(key) == b"list":
                    payloads.extend(client.lrange(key, 0, -1))
        return payloads


class PrivateRabbit(_Logged):
    """A RabbitMQ node of our own: node name, AMQP and distribution ports, data, logs,
    Erlang cookie (HOME) and an empty plugin list. The shared node is never addressed:
    every rabbitmqctl call names this node with ``-n``."""

    kind = "amqp"

    def __init__(self, base_dir: Path) -> None:
        self.base = Path(base_dir) / "rabbitmq"
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = support.free_port()
        self.dist_port = support.free_port()
        self.node = f"fg_fault_{self.port}@localhost"
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.base),  # the Erlang cookie lives here, private to this node
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            # Not /etc/rabbitmq/rabbitmq.conf: it binds the shared node's port 5672.
            "RABBITMQ_CONFIG_FILE": str(self.base / "no-config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.app_stopped = False  # stop_app() was called and start_app() not yet
        self.blocked = False      # a memory alarm is forced

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout_s: float = 60) -> None:
        assert not self.running, "already running"
        self.app_stopped = self.blocked = False  # a fresh VM: application up, default watermark
        self._reopen_log(self.base / "server.out")
        # rabbitmq-server runs the VM (beam.smp) as its child; the script's PID leads the
        # process group, so the VM can be found (and signalled) without naming anything.
        self.proc = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], env=self.env,
                                     cwd=self.base, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

        def accepts() -> bool:
            if self.proc.poll() is not None:
                raise BrokerExited(f"rabbitmq-server exited: see {self.base / 'server.out'}")
            if not _port_open(self.port):
                return False
            conn = self.connection("/")
            conn.close()
            return True

        _wait(accepts, timeout_s, f"RabbitMQ node {self.node} did not accept AMQP", 0.2)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def beam_pid(self) -> int:
        """The Erlang VM's PID: the beam.smp process in our server's process group."""
        assert self.proc is not None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1: stat.rindex(")")]
            pgrp = int(stat[stat.rindex(")") + 2:].split()[2])
            if pgrp == self.proc.pid and comm.startswith("beam"):
                return int(entry.name)
        raise AssertionError(f"no beam.smp in process group {self.proc.pid}")

    def kill9(self) -> None:
        """``kill -9`` the broker's VM, then reap what is left of its process group."""
        if not self.running:
            return
        os.kill(self.beam_pid(), signal.SIGKILL)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the wrapper shell, erl_child_setup
        except ProcessLookupError:
            pass
        self.proc.wait(15)
        self._wait_port_closed()

    def stop(self, timeout_s: float = 30) -> None:
        """A clean shutdown: SIGTERM to the wrapper, which stops the node properly."""
        if not self.running:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()
        self._wait_port_closed()

    def _wait_port_closed(self) -> None:
        _wait(lambda: not _port_open(self.port), 10, f"port {self.port} still open")
        # epmd forgets the node name once the VM's connection to it closes
        _wait(lambda: self.node.split("@")[0] not in self._epmd_names(), 10,
              f"epmd still lists {self.node}")

    def _epmd_names(self) -> str:
        out = subprocess.run(["epmd", "-names"], capture_output=True, text=True, env=self.env)
        return out.stdout

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self.running:
            try:
                self.kill9()
            except (AssertionError, ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._log:
            self._log.close()

    # -- administration, faults and inspection -----------------------------------------------
    def ctl(self, *args: str, check: bool = True) -> str:
        out = subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, "-q", *args],
                             env=self.env, capture_output=True, text=True, timeout=60)
        if check and out.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {out.stderr or out.stdout}")
        return out.stdout

    def add_vhosts(self, *vhosts: str) -> None:
        """Create vhosts with full rights for guest, all in one rabbitmqctl call
        (each call costs about a second)."""
        definitions = {
            "vhosts": [{"name": v} for v in vhosts],
            "permissions": [{"user": "guest", "vhost": v, "configure": ".*", "write": ".*",
                             "read": ".*"} for v in vhosts],
        }
        path = self.base / f"vhosts-{vhosts[0]}.json"
        path.write_text(json.dumps(definitions))
        self.ctl("import_definitions", str(path))

    def stop_app(self) -> None:
        """Stop the broker application (listeners closed, clients cut off); the VM stays."""
        self.ctl("stop_app")
        self.app_stopped = True
        _wait(lambda: not _port_open(self.port), 10, f"port {self.port} still open")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.app_stopped = False
        _wait(lambda: self.connection("/").close() or True, 30,
              f"RabbitMQ node {self.node} did not accept AMQP again", 0.2)

    def block(self) -> None:
        """Raise a memory alarm: the node stays up but stops reading from publishers."""
        self.ctl("set_vm_memory_high_watermark", "0.0000001")
        self.blocked = True
        _wait(lambda: "memory" in self.ctl("eval", "rabbit_alarm:get_alarms()."), 10,
              "the memory alarm was not raised")

    def unblock(self) -> None:
        self.ctl("set_vm_memory_high_watermark", "0.4")
        self.blocked = False

    def url(self, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    def connection(self, vhost: str) -> amqp.Connection:
        conn = amqp.Connection(host=f"127.0.0.1:{self.port}", userid="guest", password="guest",
                               virtual_host=vhost, connect_timeout=2)
        conn.connect()
        return conn

    def depth(self, vhost: str, queue: str) -> int:
        """Ready messages in ``queue`` (0 if it does not exist)."""
        conn = self.connection(vhost)
        try:
            _, count, _ = conn.channel().queue_declare(queue, passive=True)
            return count
        except amqp.exceptions.NotFound:
            return 0
        finally:
            conn.close()


class Broker:
    """The broker of one test, whichever kind: what a fault test needs to do to it."""

    def __init__(self, server: PrivateRedis | PrivateRabbit, vhost: str | None = None) -> None:
        self.server, self.vhost, self.kind = server, vhost, server.kind

    @property
    def url(self) -> str:
        return self.server.url(self.vhost) if self.kind == "amqp" else self.server.url(0)

    def depth(self, queue: str) -> int:
        if self.kind == "amqp":
            return self.server.depth(self.vhost, queue)
        return len(self.server.queued_messages(queue))

    def kill9(self) -> None:
        self.server.kill9()

    def stop(self) -> None:
        """Stop the broker: Redis shuts down; RabbitMQ stops its application (listeners and
        connections closed, quicker to bring back than a whole node)."""
        self.server.stop_app() if self.kind == "amqp" else self.server.stop()

    def start(self) -> None:
        """Bring the broker back, whichever way it went down (idempotent)."""
        if not self.server.running:
            self.server.start()
        elif self.kind == "amqp" and self.server.app_stopped:
            self.server.start_app()

    def restart(self) -> None:
        """A clean restart, data kept: Redis restarts its process; RabbitMQ its application
        (every connection is closed with CONNECTION_FORCED and the durable queues are
        recovered from disk, as in a node restart, without the VM's boot time)."""
        self.stop()
        self.start()

    def block(self, seconds: float) -> None:
        """Up but unresponsive: RabbitMQ under a memory alarm (until ``unblock``), Redis
        paused for ``seconds``."""
        self.server.block() if self.kind == "amqp" else self.server.block(seconds)

    def unblock(self) -> None:
        self.server.unblock()
