"""Several tenants posting at once, each its own way, for bench (g): asyncio, persistent
keep-alive connections, pre-built request bytes (bench/harness/http_load.py's ``Conn``).

    python -m bench.harness.tenant_load SPEC.json OUT.json

SPEC: {"host", "port", "duration_s", "timeout_s", "tenants": [TENANT, ...]}; a TENANT is
{"name", "request" (raw HTTP), "kind", "rate"} and, by kind:

* ``greedy``: ``conns`` connections sending back to back, paced so that attempts never
  exceed ``rate`` a second; a 503 is followed at once by the next attempt (Retry-After
  ignored). Each attempt is a new post.
* ``polite``: posts arrive at ``rate`` a second (``arrival``: ``poisson`` or ``fixed``);
  a refused post waits its Retry-After (at most ``max_wait_s``) and tries again, at most
  ``max_attempts`` times in all.

Every attempt of every tenant is bounded in count (rate x duration) and in time
(``timeout_s`` per answer). OUT: per tenant, ``posts`` (one row per post: due, attempts,
first status, final status, the accepted attempt's send time, job id) and ``counts``
(status -> attempts), plus the generator's own CPU.
"""
from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time

from bench.harness.http_load import Conn, job_id_of

#: An attempt that never got an answer (connection error, timeout).
NO_ANSWER = -1


def retry_after_of(body: bytes, default_s: float = 1.0) -> float:
    """A 503's ``retry_after_s`` (the JSON body carries the Retry-After header's value)."""
    try:
        return float(json.loads(body).get("retry_after_s", default_s))
    except (ValueError, AttributeError):
        return default_s


def reason_of(body: bytes) -> str:
    try:
        return str(json.loads(body).get("reason") or "no reason")
    except (ValueError, AttributeError):
        return "not JSON"


class Lanes:
    """Keep-alive connections of one tenant, taken and given back."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.free: list[Conn] = []

    async def attempt(self, data: bytes, timeout_s: float) -> tuple[int, bytes]:
        conn = self.free.pop() if self.free else None
        try:
            async with asyncio.timeout(timeout_s):
                if conn is None or not conn.alive or conn.stale:
                    if conn is not None:
                        conn.close()
                    conn = await Conn(self.host, self.port).open()
                status, body = await conn.request(data)
        except Exception:  # noqa: BLE001 - reset, refused, timeout: no answer
            if conn is not None:
                conn.close()
            return NO_ANSWER, b""
        self.free.append(conn)
        return status, body

    def close(self) -> None:
        for conn in self.free:
            conn.close()


class Tenant:
    """One tenant's posts and counts."""

    def __init__(self, spec: dict, host: str, port: int, clock, timeout_s: float) -> None:
        self.spec, self.clock, self.timeout_s = spec, clock, timeout_s
        self.data = spec["request"].encode()
        self.lanes = Lanes(host, port)
        self.posts: list[dict] = []
        self.counts: dict[str, int] = {}
        self.reasons: dict[str, int] = {}

    async def send(self) -> tuple[int, bytes, float]:
        sent = self.clock()
        status, body = await self.lanes.attempt(self.data, self.timeout_s)
        self.counts[str(status)] = self.counts.get(str(status), 0) + 1
        if status == 503:
            reason = reason_of(body)
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
        return status, body, sent

    async def greedy(self, t0: float, duration_s: float) -> None:
        rate = float(self.spec["rate"])
        n = int(rate * duration_s)
        state = {"i": 0}

        async def lane() -> None:
            while state["i"] < n and self.clock() < t0 + duration_s:
                i = state["i"]
                state["i"] += 1
                due = t0 + i / rate
                await asyncio.sleep(max(0.0, due - self.clock()))
                status, body, sent = await self.send()
                self.posts.append({"due": due, "attempts": 1, "first": status,
                                   "final": status, "sent": sent,
                                   "job": job_id_of(body) if status == 202 else None})

        await asyncio.gather(*(lane() for _ in range(int(self.spec.get("conns", 16)))))

    async def polite(self, t0: float, duration_s: float) -> None:
        rate = float(self.spec["rate"])
        rng = random.Random(self.spec.get("seed", 0))
        poisson = self.spec.get("arrival", "poisson") == "poisson"
        dues, t = [], 0.0
        while len(dues) < int(rate * duration_s * 2):
            t += rng.expovariate(rate) if poisson else 1 / rate
            if t >= duration_s:
                break
            dues.append(t0 + t)
        await asyncio.gather(*(self.one_polite(due) for due in dues))

    async def one_polite(self, due: float) -> None:
        await asyncio.sleep(max(0.0, due - self.clock()))
        row = {"due": due, "attempts": 0, "first": None, "final": None, "sent": None,
               "job": None, "waited_s": 0.0}
        self.posts.append(row)
        for attempt in range(int(self.spec.get("max_attempts", 4))):
            status, body, sent = await self.send()
            row["attempts"] += 1
            row["first"] = status if row["first"] is None else row["first"]
            row["final"], row["sent"] = status, sent
            if status == 202:
                row["job"] = job_id_of(body)
                return
            if status != 503 or attempt + 1 >= int(self.spec.get("max_attempts", 4)):
                return
            wait_s = min(retry_after_of(body), float(self.spec.get("max_wait_s", 10)))
            row["waited_s"] += wait_s
            await asyncio.sleep(wait_s)

    def result(self) -> dict:
        self.lanes.close()
        return {"name": self.spec["name"], "kind": self.spec["kind"],
                "rate": self.spec["rate"], "posts": self.posts, "counts": self.counts,
                "reasons_503": self.reasons}


async def run(spec: dict) -> dict:
    offset = time.time() - time.perf_counter()
    clock = lambda: time.perf_counter() + offset  # noqa: E731 - epoch seconds, monotonic
    duration_s, timeout_s = float(spec["duration_s"]), float(spec.get("timeout_s", 10))
    tenants = [Tenant(t, spec["host"], spec["port"], clock, timeout_s) for t in spec["tenants"]]
    t0 = clock() + 0.3
    await asyncio.gather(*(getattr(t, t.spec["kind"])(t0, duration_s) for t in tenants))
    return {"t0": t0, "t_end": clock(), "tenants": [t.result() for t in tenants]}


def main() -> None:
    spec = json.loads(open(sys.argv[1]).read())
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    out = asyncio.run(run(spec))
    r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out.update(loadgen_cpu_s=round(cpu, 3), loadgen_cpu_share=round(cpu / max(1e-9, w1 - w0), 3))
    with open(sys.argv[2], "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
