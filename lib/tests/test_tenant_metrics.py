"""Per-tenant counts stay bounded: Prometheus labels at most TOP_TENANTS tenants by name per
process, and the shared per-second hashes at most TENANT_FIELDS_TENANTS per second, the
rest summed as "other", so no count is lost and no stream of names grows the series.

The Redis tests write under a private key prefix in the suite's database and delete only
their own keys.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_floodgate import metrics, submits
from celery_floodgate.limits import BUCKET_TTL_S, Keys
from celery_floodgate.meter import Meter
from conftest import meter_url

tenants = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e),
                  min_size=1, max_size=8)
classes = st.sampled_from(["sheddable", "default", "critical"])


@contextmanager
def fresh_labels() -> Iterator[None]:
    """A process that has labelled no tenant yet."""
    saved = metrics._labelled, metrics._children
    metrics._labelled, metrics._children = set(), {}
    try:
        yield
    finally:
        metrics._labelled, metrics._children = saved


@given(st.lists(tenants, max_size=300))
def test_no_stream_of_tenants_makes_more_than_top_tenants_plus_other_labels(
        stream: list[str]) -> None:
    with fresh_labels():
        labels = [metrics.tenant_label(t) for t in stream]
        again = [metrics.tenant_label(t) for t in stream]
    assert len(set(labels)) <= metrics.TOP_TENANTS + 1
    assert labels == again  # a tenant's label never moves once given
    first_seen = list(dict.fromkeys(t for t in stream if t != metrics.OTHER))
    named = {label for label in labels if label != metrics.OTHER}
    assert named == set(first_seen[:metrics.TOP_TENANTS])


def test_reserved_tenants_are_named_even_when_others_come_first() -> None:
    with fresh_labels():
        metrics.reserve_tenants(["gold", "silver"])
        for i in range(100):
            metrics.tenant_label(f"t{i}")
        assert metrics.tenant_label("gold") == "gold"
        assert metrics.tenant_label("silver") == "silver"
        assert metrics.tenant_label("t99") == metrics.OTHER


def prometheus_samples(queue: str) -> dict[tuple[str, str, str], float]:
    from prometheus_client import REGISTRY

    found = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if (sample.name == "floodgate_tenant_submissions_total"
                    and sample.labels["queue"] == queue):
                labels = sample.labels
                found[(labels["tenant"], labels["criticality"], labels["outcome"])] = sample.value
    return found


def test_the_prometheus_counter_names_the_first_tenants_and_sums_the_rest_as_other() -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    with fresh_labels():
        for i in range(50):
            metrics.tenant_counter("accepted", queue, f"t{i}", "default").inc()
        metrics.tenant_counter("refused", queue, "t0", "sheddable").inc()
        metrics.tenant_counter("refused", queue, "t0", "no-such-class").inc()
    samples = prometheus_samples(queue)
    assert len({tenant for tenant, _, _ in samples}) == metrics.TOP_TENANTS + 1
    assert samples[(metrics.OTHER, "default", "accepted")] == 50 - metrics.TOP_TENANTS
    assert samples[("t0", "sheddable", "refused")] == 1
    assert samples[("t0", metrics.OTHER, "refused")] == 1
    assert sum(samples.values()) == 52


counts_strategy = st.dictionaries(
    st.tuples(st.sampled_from(["accepted", "refused"]), classes, tenants),
    st.integers(min_value=1, max_value=1000), max_size=80)


@given(counts_strategy, st.sets(tenants, max_size=submits.TENANT_FIELDS_TENANTS))
def test_a_bounded_second_keeps_every_count_and_names_at_most_the_bound(
        counts: dict[tuple[str, str, str], int], named: set[str]) -> None:
    bounded = submits._bounded(Counter(counts), named)
    tenants_of = {tenant for _, _, tenant in bounded}
    assert len((tenants_of | named) - {submits.OTHER}) <= submits.TENANT_FIELDS_TENANTS
    assert sum(bounded.values()) == sum(counts.values())
    for (outcome, criticality, tenant), n in counts.items():
        if tenant in named:  # a name already in the hash keeps its own field
            assert bounded[(outcome, criticality, tenant)] == n


@given(counts_strategy)
@settings(max_examples=50)
def test_the_heaviest_tenants_of_a_second_keep_their_names(
        counts: dict[tuple[str, str, str], int]) -> None:
    totals: Counter[str] = Counter()
    for (_, _, tenant), n in counts.items():
        totals[tenant] += n
    bounded = submits._bounded(Counter(counts), set())
    kept = {tenant for _, _, tenant in bounded} - {submits.OTHER}
    dropped = set(totals) - kept - {submits.OTHER}
    if dropped:
        assert min(totals[t] for t in kept) >= max(totals[t] for t in dropped)


@pytest.fixture
def meter() -> Iterator[Meter]:
    prefix = f"{os.environ.get('FLOODGATE_TEST_PREFIX', 'floodgate')}-tenant-metrics-" \
             f"{uuid.uuid4().hex[:8]}"
    found = Meter(meter_url(), Keys(prefix))
    assert found.client is not None
    yield found
    for name in found.client.scan_iter(f"{prefix}:*"):
        found.client.delete(name)


def test_recorded_tenants_are_read_back_per_tenant_and_class_with_the_rest_as_other(
        meter: Meter) -> None:
    for i in range(30):  # t0 busiest, t29 quietest
        for _ in range(30 - i):
            submits.record_tenant(meter, "fanout", submits.ACCEPTED, f"t{i}", "default")
    for _ in range(7):
        submits.record_tenant(meter, "fanout", submits.REFUSED, "t0", "sheddable")
    submits.counter(meter).flush()

    rows = submits.recent_tenant_counts(meter, "fanout")
    assert rows[0] == submits.TenantCounts("t0", "default", 30, 0)
    assert rows[1] == submits.TenantCounts("t0", "sheddable", 0, 7)
    assert rows[-1] == submits.TenantCounts(submits.OTHER, "default", sum(range(1, 11)), 0)
    assert len({row.tenant for row in rows}) == submits.TENANT_FIELDS_TENANTS + 1
    assert sum(row.accepted + row.refused for row in rows) == sum(range(1, 31)) + 7
    assert submits.recent_tenant_counts(meter, "another-queue") == []


def test_the_tenant_buckets_expire_like_the_others(meter: Meter) -> None:
    submits.record_tenant(meter, "fanout", submits.ACCEPTED, "acme", "critical")
    submits.counter(meter).flush()
    client = meter.client
    assert client is not None
    (name,) = client.scan_iter(f"{meter.keys.prefix}:submits:tenants:fanout:*")
    assert 0 < client.ttl(name) <= BUCKET_TTL_S


def test_concurrent_flushers_into_one_second_never_name_more_than_the_bound(
        meter: Meter) -> None:
    client = meter.client
    assert client is not None
    name = submits.tenant_key(meter.keys.prefix, "fanout", int(time.time()))
    per_flusher = 8

    def flusher(k: int) -> None:
        own = redis.Redis.from_url(meter_url())
        counts = Counter({("accepted", "default", f"p{k}-t{i}"): 1 for i in range(per_flusher)})
        while True:  # as the flush thread does: a conflict waits for the next flush
            try:
                return submits._add_tenant_counts(own, name, counts)
            except redis.WatchError:
                time.sleep(0.01)

    threads = [threading.Thread(target=flusher, args=(k,)) for k in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fields = {k.decode(): int(v) for k, v in client.hgetall(name).items()}
    named = {field.split("|", 2)[2] for field in fields} - {submits.OTHER}
    assert len(named) == submits.TENANT_FIELDS_TENANTS
    assert sum(fields.values()) == 10 * per_flusher


def test_a_class_outside_the_three_is_counted_as_other(meter: Meter) -> None:
    submits.record_tenant(meter, "fanout", submits.ACCEPTED, "acme", "urgent|x")
    submits.counter(meter).flush()
    assert submits.recent_tenant_counts(meter, "fanout") == [
        submits.TenantCounts("acme", submits.OTHER, 1, 0)]


def test_counts_made_while_redis_is_away_arrive_once_it_answers(meter: Meter) -> None:
    url = meter.url
    meter.point_at("redis://127.0.0.1:1/0")  # nothing listens there
    for tenant in ("acme", "globex", "acme"):
        submits.record_tenant(meter, "fanout", submits.ACCEPTED, tenant, "default")
    submits.counter(meter).flush()  # refused: the counts wait
    meter.point_at(url)
    submits.counter(meter).flush()
    assert submits.recent_tenant_counts(meter, "fanout") == [
        submits.TenantCounts("acme", "default", 2, 0),
        submits.TenantCounts("globex", "default", 1, 0)]
