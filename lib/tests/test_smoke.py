"""The plain project adopts the guard: a full queue refuses, and refusals leave nothing."""
from __future__ import annotations

import pytest

from celery_floodgate import QueueFull, queue_stats


def test_a_full_queue_refuses_with_retry_after_and_keeps_its_limit(project) -> None:
    accepted = 0
    for _ in range(20):
        project.slow.delay(0)
        accepted += 1
    with pytest.raises(QueueFull) as refused:
        project.slow.delay(0)
    assert refused.value.queue == "bounded"
    assert refused.value.limit == 20
    assert refused.value.retry_after_s >= 1
    assert queue_stats(project.app)["bounded"]["depth"] == accepted
