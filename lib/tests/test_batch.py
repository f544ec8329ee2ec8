"""submit_many on the real broker: one call, many jobs, the plain project's limit of 20
honoured exactly (with concurrent batches and single submissions alike), each refused item
reported by index, and nothing of a refused item left in the queue."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery import uuid

from celery_floodgate import BatchResult, QueueFull, submit_many
from celery_floodgate.stats import depth
from conftest import take_queued_ids

LIMIT = 20


def batch(project, n: int, **options) -> BatchResult:
    return submit_many(project.app, "tasks.slow", [(0,)] * n, **options)


def assert_consistent(result: BatchResult, n: int) -> None:
    """Every item is either accepted or refused, once; ids line up with indexes."""
    refused_at = [i for i, _ in result.refused]
    assert len(result.ids) == n and len(set(result.ids)) == n
    assert refused_at == sorted(set(refused_at))
    assert sorted(result.accepted_indexes() + refused_at) == list(range(n))
    assert result.accepted == [result.ids[i] for i in result.accepted_indexes()]
    for _, full in result.refused:
        assert isinstance(full, QueueFull)
        assert (full.queue, full.limit) == ("bounded", LIMIT) and full.retry_after_s >= 1


def test_a_batch_within_the_limit_is_admitted_whole_with_the_callers_ids(project) -> None:
    ids = [f"job-{i}" for i in range(12)]
    result = submit_many(project.app, "tasks.slow", [(0,)] * 12, task_ids=ids)
    assert result.accepted == ids and result.refused == []
    assert result.retry_after_s is None
    assert take_queued_ids(project.app, "bounded") == ids  # in submission order


def test_a_batch_past_the_limit_admits_what_fits_in_order_and_refuses_the_rest(project) -> None:
    for _ in range(LIMIT - 5):
        project.slow.delay(0)
    result = batch(project, 12)

    assert_consistent(result, 12)
    assert result.accepted_indexes() == [0, 1, 2, 3, 4]
    assert [i for i, _ in result.refused] == list(range(5, 12))
    assert "queue 'bounded' is full" in str(result.refused[0][1])
    assert result.retry_after_s is not None and result.retry_after_s >= 1
    assert depth(project.app, "bounded") == LIMIT
    again = batch(project, 3)
    assert again.accepted == [] and [i for i, _ in again.refused] == [0, 1, 2]
    queued = set(take_queued_ids(project.app, "bounded"))
    assert set(result.accepted) <= queued
    assert not queued & {result.ids[i] for i, _ in result.refused}
    assert not queued & set(again.ids)


def test_concurrent_batches_share_the_limit_exactly(project) -> None:
    barrier = threading.Barrier(6)

    def one(_: int) -> BatchResult:
        barrier.wait()
        return batch(project, 9)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(6)))

    for result in results:
        assert_consistent(result, 9)
    assert sum(len(r.accepted) for r in results) == LIMIT
    assert sum(len(r.refused) for r in results) == 6 * 9 - LIMIT
    accepted = [task_id for r in results for task_id in r.accepted]
    assert sorted(take_queued_ids(project.app, "bounded")) == sorted(accepted)


def test_batches_and_single_submissions_share_one_exact_limit(project) -> None:
    def single(_: int) -> str | None:
        try:
            return project.slow.delay(0).id
        except QueueFull:
            return None

    with ThreadPoolExecutor(6) as pool:
        batches = [pool.submit(batch, project, 8) for _ in range(3)]
        singles = [task_id for task_id in pool.map(single, range(30)) if task_id]
        accepted = singles + [i for b in batches for i in b.result().accepted]
    assert len(accepted) == LIMIT
    assert sorted(take_queued_ids(project.app, "bounded")) == sorted(accepted)


def test_a_batch_to_a_named_queue_honours_that_queues_limit(project) -> None:
    result = submit_many(project.app, "tasks.add", [(i, i) for i in range(5)], queue="celery")
    assert len(result.accepted) == 5 and result.refused == []
    assert depth(project.app, "celery") == 5 and depth(project.app, "bounded") in (0, None)


def test_an_empty_batch_sends_nothing_and_mismatched_lists_are_refused(project) -> None:
    empty = submit_many(project.app, "tasks.slow", [])
    assert (empty.ids, empty.accepted, empty.refused) == ([], [], [])
    with pytest.raises(ValueError, match="one entry per item"):
        submit_many(project.app, "tasks.slow", [(0,), (0,)], task_ids=[uuid()])
    with pytest.raises(ValueError, match="one entry per item"):
        submit_many(project.app, "tasks.slow", [(0,)], kwargs_list=[{}, {}])
    assert depth(project.app, "bounded") in (0, None)
