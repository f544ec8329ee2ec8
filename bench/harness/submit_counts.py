"""A measured window for the submission bench: submissions counted, wall time, and the CPU
of this process and of the broker's processes in it. Standard library only: the arq
submitter imports it from a venv of its own (arq pins redis<6)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable

_TICK = os.sysconf("SC_CLK_TCK")


def servers_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (/proc/<pid>/stat fields 14, 15)."""
    total = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


class Window:
    """``open()`` then ``close()``: what ``count()`` grew by, and the CPU spent, between."""

    def __init__(self, count: Callable[[], int], server_pids: list[int]) -> None:
        self.count, self.server_pids = count, server_pids

    def _snap(self) -> tuple[int, float, float, float]:
        return (self.count(), time.perf_counter(), time.process_time(),
                servers_cpu_s(self.server_pids))

    def open(self) -> None:
        self.start = self._snap()

    def close(self) -> dict:
        end = self._snap()
        n, wall_s, cpu_s, server_s = (b - a for a, b in zip(self.start, end))
        return {"tasks": n, "wall_s": wall_s, "cpu_s": cpu_s, "server_cpu_s": server_s,
                "tasks_per_s": n / wall_s if wall_s > 0 else None,
                "cpu_us_per_task": 1e6 * cpu_s / n if n else None,
                "server_cpu_us_per_task": 1e6 * server_s / n if n else None}
