"""One client of bench (g)'s self-throttling part: the library's own ``post_with_backoff``
(httpx, threads), posting as one user at a fixed rate, with its throttle on or off.

    python -m bench.harness.throttle_load SPEC.json OUT.json

SPEC: {"base_url", "api_key", "rate", "duration_s", "threads", "throttle": bool,
"max_attempts", "max_total_s", "max_lag_s"}. Posts are due every 1/rate s; a thread
takes each (if every thread is busy the post starts late: ``start_lag_p99_s`` says how
late; one that would start more than ``max_lag_s`` late is dropped and counted in
``dropped``: the client could not offer it, so the phase ends on time). Every
HTTP answer the client receives is counted by status (an httpx response hook): those
are the requests that reached the API. A post the throttle refused at its last
attempt ends as a 503 made here (``floodgate_throttled``), counted apart.
"""
from __future__ import annotations

import json
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from celery_floodgate.client import post_with_backoff


def main() -> None:
    spec = json.loads(open(sys.argv[1]).read())
    wire: dict[str, int] = {}
    finals: dict[str, int] = {}
    lags: list[float] = []
    starts: list[float] = []
    lock = threading.Lock()

    def on_response(response: httpx.Response) -> None:
        with lock:
            wire[str(response.status_code)] = wire.get(str(response.status_code), 0) + 1

    threads = int(spec["threads"])
    client = httpx.Client(base_url=spec["base_url"], timeout=10.0,
                          headers={"Authorization": f"Bearer {spec['api_key']}"},
                          limits=httpx.Limits(max_connections=min(threads, 256),
                                              max_keepalive_connections=min(threads, 256)),
                          event_hooks={"response": [on_response]})
    bounds = {"max_attempts": int(spec["max_attempts"]), "max_total_s": float(spec["max_total_s"])}
    if not spec["throttle"]:
        bounds["throttle"] = None

    max_lag_s = float(spec.get("max_lag_s", 1.0))
    dropped = [0]

    def one(due: float) -> None:
        lag = time.time() - due
        with lock:
            if lag > max_lag_s:
                dropped[0] += 1
                return
            starts.append(time.time())
        try:
            response = post_with_backoff(client, "/posts", {"text": "bench g"}, **bounds)
            key = ("503 local" if "floodgate_throttled" in response.extensions
                   else str(response.status_code))
        except httpx.HTTPError as exc:
            key = type(exc).__name__
        with lock:
            finals[key] = finals.get(key, 0) + 1
            lags.append(lag)

    rate, duration_s = float(spec["rate"]), float(spec["duration_s"])
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    t0 = time.time() + 0.2
    with ThreadPoolExecutor(threads) as pool:
        for i in range(int(rate * duration_s)):
            due = t0 + i / rate
            time.sleep(max(0.0, due - time.time()))
            pool.submit(one, due)
    t_end = time.time()
    client.close()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    lags.sort()
    out = {"t0": t0, "t_end": t_end, "posts": sum(finals.values()), "finals": finals,
           "dropped": dropped[0],
           "wire": wire, "sent": sum(wire.values()),
           "start_lag_p99_s": round(lags[int(0.99 * (len(lags) - 1))], 3) if lags else None,
           "client_cpu_s": round(cpu, 2), "last_start": max(starts, default=t0), "wall_s": round(t_end - w0, 2)}
    with open(sys.argv[2], "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
