"""A lean HTTP/1.1 load generator for experiment (f): asyncio streams, pre-built request
bytes, persistent keep-alive connections; no HTTP library in the hot loop.

Run in a process of its own so its CPU is measured apart from what it loads:

    python -m bench.harness.http_load SPEC.json OUT.json

SPEC: {"host", "port", "mode": "open"|"closed"|"burst", "requests": [raw request str],
"rate", "duration_s", "conns", "max_conns", "n", "pin_cpu"}.

* ``open``: request i is due at t0 + i/rate, sent whatever came back before (open loop),
  on an idle connection of a pool that grows up to ``max_conns``; every request records
  due, sent (epoch s), latency from sending and from its due time, status and, for a 202,
  the job id.
* ``closed``: ``conns`` connections each send back to back for ``duration_s``; counts only.
* ``burst``: ``n`` requests as fast as ``conns`` connections allow; full records.

OUT also carries the generator's own CPU (getrusage) and wall time.
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import sys
import time

JOB_KEY = b'"job_id":"'


def post(path: str, body: dict, host: str = "127.0.0.1", headers: dict | None = None) -> str:
    data = json.dumps(body, separators=(",", ":"))
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{_lines(headers)}"
            f"Content-Type: application/json\r\n"
            f"Content-Length: {len(data.encode())}\r\n\r\n{data}")


def get(path: str, host: str = "127.0.0.1", headers: dict | None = None) -> str:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{_lines(headers)}\r\n"


def bearer(api_key: str | None) -> dict:
    """The header that authenticates a request (none for code before API keys)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _lines(headers: dict | None) -> str:
    return "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())


class Conn:
    """One keep-alive connection; ``request`` returns (status, body)."""

    #: uvicorn closes a keep-alive connection idle for 5 s (--timeout-keep-alive); one idle
    #: longer than this is replaced rather than reused, so no request meets a closing socket.
    MAX_IDLE_S = 3.0

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader = self.writer = None
        self.last = time.monotonic()

    async def open(self) -> "Conn":
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    async def request(self, data: bytes) -> tuple[int, bytes]:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        i = lower.find(b"content-length:")
        body = b""
        if i >= 0:
            n = int(lower[i + 15:lower.index(b"\r\n", i)])
            body = await self.reader.readexactly(n) if n else b""
        if b"connection: close" in lower:
            self.close()
        self.last = time.monotonic()
        return status, body

    @property
    def stale(self) -> bool:
        return time.monotonic() - self.last > self.MAX_IDLE_S

    @property
    def alive(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def job_id_of(body: bytes) -> str | None:
    i = body.find(JOB_KEY)
    return body[i + 10:i + 46].decode() if i >= 0 else None


class Pool:
    """Keep-alive connections, opened on demand up to ``max_conns``; a request finding
    none free waits for one (that wait counts in its latency from due time)."""

    def __init__(self, host: str, port: int, max_conns: int) -> None:
        self.host, self.port, self.max_conns = host, port, max_conns
        self.free: asyncio.Queue[Conn] = asyncio.Queue()
        self.count = 0
        self.peak = 0

    async def warm(self, n: int) -> None:
        conns = await asyncio.gather(*(Conn(self.host, self.port).open() for _ in range(n)))
        for conn in conns:
            self.free.put_nowait(conn)
        self.count += n
        self.peak = max(self.peak, self.count)

    async def take(self) -> Conn:
        while True:
            try:
                conn = self.free.get_nowait()
            except asyncio.QueueEmpty:
                break
            if not conn.stale and conn.alive:
                return conn
            conn.close()
            self.count -= 1
        if self.count < self.max_conns:
            self.count += 1
            self.peak = max(self.peak, self.count)
            try:
                return await Conn(self.host, self.port).open()
            except BaseException:
                self.count -= 1
                raise
        return await self.free.get()

    def give(self, conn: Conn) -> None:
        if conn.alive:
            self.free.put_nowait(conn)
        else:
            self.count -= 1

    def close(self) -> None:
        while not self.free.empty():
            self.free.get_nowait().close()


async def _one(pool: Pool, data: bytes, i: int, due: float, rec: dict, clock,
               timeout_s: float) -> None:
    """One request; unanswered ``timeout_s`` after its due time it counts as a timeout
    (status -2) and its connection is dropped."""
    conn = None
    sent = None
    status, body = -1, b""
    try:
        async with asyncio.timeout(max(0.001, due + timeout_s - clock())):
            conn = await pool.take()
            sent = clock()
            status, body = await conn.request(data)
    except TimeoutError:
        status = -2
        _count(rec, "timeout (no answer %g s after due)" % timeout_s)
    except Exception as exc:  # noqa: BLE001 - reset, closed, refused: an error row
        _count(rec, type(exc).__name__)
    end = clock()
    if conn is not None:
        if status < 0:
            conn.close()
        pool.give(conn)
    rec["sent"][i], rec["status"][i] = sent if sent is not None else end, status
    rec["lat"][i] = end - sent if sent is not None else None
    rec["lat_due"][i] = end - due
    if status == 202:
        rec["job"][i] = job_id_of(body)
    elif status == 503:
        _note_503(rec, body)


def _count(rec: dict, key: str) -> None:
    errors = rec.setdefault("errors", {})
    errors[key] = errors.get(key, 0) + 1


def _note_503(rec: dict, body: bytes) -> None:
    """Count 503s that are not a full queue (broker down, store failed), with one sample."""
    if b'"depth":' in body:
        return
    errors = rec.setdefault("errors", {})
    key = "503 " + body[:160].decode(errors="replace")
    errors[key] = errors.get(key, 0) + 1


def _records(n: int) -> dict:
    return {k: [None] * n for k in ("due", "sent", "status", "lat", "lat_due", "job")}


def _epoch_clock():
    """A monotonic clock expressed in epoch seconds (one offset, taken once)."""
    offset = time.time() - time.perf_counter()
    return lambda: time.perf_counter() + offset


async def open_loop(spec: dict) -> dict:
    clock = _epoch_clock()
    reqs = [r.encode() for r in spec["requests"]]
    rate, duration = float(spec["rate"]), float(spec["duration_s"])
    timeout_s = float(spec.get("timeout_s", 10))
    n = int(rate * duration)
    pool = Pool(spec["host"], spec["port"], int(spec.get("max_conns", 512)))
    await pool.warm(int(spec.get("conns", max(8, min(64, rate * 0.05)))))
    rec = _records(n)
    t0 = clock() + 0.2
    tasks, i = set(), 0
    max_lag = 0.0
    while i < n:
        now = clock()
        while i < n and t0 + i / rate <= now:
            due = t0 + i / rate
            rec["due"][i] = due
            max_lag = max(max_lag, now - due)
            t = asyncio.ensure_future(_one(pool, reqs[i % len(reqs)], i, due, rec, clock,
                                           timeout_s))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            i += 1
        if i < n:
            await asyncio.sleep(max(0.0, t0 + i / rate - clock()))
    t_end = clock()
    if tasks:  # each ends by its own timeout; the margin only guards against a bug
        await asyncio.wait(tasks, timeout=timeout_s + 5)
    pool.close()
    return {"t0": t0, "t_end": t_end, "records": rec, "dispatch_max_lag_s": max_lag,
            "peak_conns": pool.peak}


async def closed_loop(spec: dict) -> dict:
    clock = _epoch_clock()
    reqs = [r.encode() for r in spec["requests"]]
    conns = int(spec["conns"])
    duration = float(spec.get("duration_s", 10))
    limit_n = spec.get("n")
    counts: dict[int, int] = {}
    lat: dict[int, list] = {}
    rec = _records(int(limit_n)) if limit_n else None
    state = {"i": 0}
    out_errors: dict = {}
    t0 = clock()
    deadline = t0 + duration

    async def lane() -> None:
        conn = await Conn(spec["host"], spec["port"]).open()
        while True:
            i = state["i"]
            if (limit_n and i >= limit_n) or (not limit_n and clock() >= deadline):
                break
            state["i"] += 1
            data = reqs[i % len(reqs)]
            sent = clock()
            try:
                if not conn.alive:
                    conn = await Conn(spec["host"], spec["port"]).open()
                status, body = await conn.request(data)
            except Exception:  # noqa: BLE001
                conn.close()
                status, body = -1, b""
            end = clock()
            counts[status] = counts.get(status, 0) + 1
            lat.setdefault(status, []).append(end - sent)
            if status == 503:
                _note_503(out_errors, body)
            if rec is not None:
                rec["due"][i], rec["sent"][i], rec["status"][i] = sent, sent, status
                rec["lat"][i] = rec["lat_due"][i] = end - sent
                rec["job"][i] = job_id_of(body) if status == 202 else None
                if status not in (202, 503):
                    rec.setdefault("bodies", []).append(body[:300].decode(errors="replace"))
        conn.close()

    await asyncio.gather(*(lane() for _ in range(conns)))
    t_end = clock()
    out = {"t0": t0, "t_end": t_end, "counts": {str(k): v for k, v in counts.items()},
           "latency": {str(k): sorted(v) for k, v in lat.items()},
           "errors": out_errors.get("errors", {})}
    if rec is not None:
        out["records"] = rec
    return out


def fetch_many(host: str, port: int, requests: list[str], conns: int = 8
               ) -> list[tuple[int, bytes]]:
    """In-process helper (setup, polling): every request once, answers in order."""
    async def go() -> list:
        out: list = [None] * len(requests)
        state = {"i": 0}

        async def lane() -> None:
            conn = await Conn(host, port).open()
            while state["i"] < len(requests):
                i = state["i"]
                state["i"] += 1
                for attempt in range(3):
                    try:
                        if not conn.alive:
                            conn = await Conn(host, port).open()
                        out[i] = await conn.request(requests[i].encode())
                        break
                    except Exception:  # noqa: BLE001
                        conn.close()
                        out[i] = (-1, b"")
            conn.close()

        await asyncio.gather(*(lane() for _ in range(max(1, min(conns, len(requests))))))
        return out

    return asyncio.run(go()) if requests else []


def main() -> None:
    spec = json.loads(open(sys.argv[1]).read())
    if spec.get("pin_cpu") is not None:
        os.sched_setaffinity(0, {int(spec["pin_cpu"])})
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    runner = {"open": open_loop, "closed": closed_loop, "burst": closed_loop}[spec["mode"]]
    out = asyncio.run(runner(spec))
    r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out.update(loadgen_cpu_s=round(cpu, 3), loadgen_wall_s=round(w1 - w0, 3),
               loadgen_cpu_share=round(cpu / max(1e-9, w1 - w0), 3),
               pinned_cpu=spec.get("pin_cpu"))
    with open(sys.argv[2], "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
