"""The fairness rule's arithmetic (`celery_floodgate.fairness`), property by property, and
how a submission names its tenant and class. Pure: no broker."""
from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celery_floodgate.fairness import (
    CLASSES,
    CRITICAL,
    DEFAULT,
    SHEDDABLE,
    Fairness,
    decide,
    identify,
    share,
    submitting_as,
)

FRACTIONS = st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)).map(sorted)
POLICIES = st.builds(
    lambda f, w: Fairness(watermark=w, class_fractions={SHEDDABLE: f[0], DEFAULT: f[1]}),
    FRACTIONS, st.floats(0.01, 1.0))
BOUNDS = st.integers(1, 100_000)


@given(POLICIES, BOUNDS)
def test_class_bounds_rise_from_sheddable_to_critical_which_is_the_limit(policy, bound) -> None:
    bounds = [policy.class_bound(bound, c) for c in CLASSES]
    assert 1 <= bounds[0] <= bounds[1] <= bounds[2] == bound


@given(POLICIES, BOUNDS, st.integers(0, 100_000), st.sampled_from(CLASSES),
       st.integers(0, 100_000), st.floats(0.1, 10), st.floats(0, 1000))
def test_nothing_is_admitted_at_its_class_bound_and_the_reason_names_the_bound(
        policy, bound, depth, criticality, mine, weight, others) -> None:
    decision = decide(policy, bound, depth, criticality, mine, weight, weight + others)
    limit = policy.class_bound(bound, criticality)
    if depth >= limit:
        assert not decision.admit and decision.excess == depth - limit + 1
        assert decision.reason == ("full" if limit == bound else "class")
    elif decision.admit is False:
        assert decision.reason == "share" and criticality != CRITICAL
        assert depth >= policy.watermark_depth(bound) and mine >= decision.share


@given(POLICIES, BOUNDS, st.integers(0, 100_000), st.floats(0.1, 10))
def test_a_lone_tenant_may_fill_its_class_bound(policy, bound, depth, weight) -> None:
    for criticality in CLASSES:
        decision = decide(policy, bound, depth, criticality, depth, weight, weight)
        assert decision.admit == (depth < policy.class_bound(bound, criticality))


@given(POLICIES, BOUNDS, st.integers(0, 100_000), st.sampled_from(CLASSES),
       st.integers(0, 100_000), st.floats(0.1, 10), st.floats(0, 1000))
def test_a_tenant_under_its_share_is_refused_only_by_its_class_bound(
        policy, bound, depth, criticality, mine, weight, others) -> None:
    mine = min(mine, share(bound, weight, weight + others) - 1)
    decision = decide(policy, bound, depth, criticality, max(0, mine), weight, weight + others)
    assert decision.admit == (depth < policy.class_bound(bound, criticality))


@given(BOUNDS, st.lists(st.floats(0.1, 10), min_size=1, max_size=50))
def test_shares_never_add_up_past_the_limit_while_each_tenant_can_progress(
        bound, weights) -> None:
    total = math.fsum(weights)
    shares = [share(bound, w, total) for w in weights]
    assert all(s >= 1 for s in shares)
    if len(weights) <= bound:  # the floor of 1 each can exceed a limit smaller than the crowd
        assert sum(shares) <= bound + len(weights)  # each floor(x) <= x, at least 1
        assert sum(s for s, w in zip(shares, weights) if bound * w / total >= 1) <= bound


@given(BOUNDS, st.floats(0.1, 10), st.floats(0, 1000), st.floats(0.01, 1000))
def test_a_share_shrinks_as_others_join_and_grows_with_the_weight(bound, w, others, more):
    assert share(bound, w, w + others + more) <= share(bound, w, w + others)
    assert share(bound, w * 2, w * 2 + others) >= share(bound, w, w + others)


@pytest.mark.parametrize("kwargs, words", [
    ({"watermark": 0}, "watermark"),
    ({"watermark": 1.5}, "watermark"),
    ({"class_fractions": {CRITICAL: 0.9}}, "critical"),
    ({"class_fractions": {SHEDDABLE: 0.9, DEFAULT: 0.5}}, "sheddable <= default"),
    ({"class_fractions": {"urgent": 0.5}}, "unknown criticality class 'urgent'"),
    ({"weights": {"acme": 0}}, "weight of tenant 'acme'"),
    ({"weights": {"has space": 1}}, "tenant must be"),
])
def test_a_bad_policy_is_refused_with_a_sentence(kwargs, words) -> None:
    with pytest.raises(ValueError, match=words):
        Fairness(**kwargs)


def test_headers_name_the_tenant_before_the_context_before_the_defaults() -> None:
    assert identify({}) == ("default", "default")
    with submitting_as("acme", SHEDDABLE):
        headers: dict = {}
        assert identify(headers) == ("acme", SHEDDABLE)
        assert headers == {"tenant": "acme", "criticality": SHEDDABLE}  # for the worker
        assert identify({"tenant": "other"}) == ("other", SHEDDABLE)
        with submitting_as(criticality=CRITICAL):  # None keeps the enclosing tenant
            assert identify({}) == ("acme", CRITICAL)
        assert identify({}) == ("acme", SHEDDABLE)
    assert identify({}) == ("default", "default")


def test_the_context_is_per_thread() -> None:
    seen = []
    with submitting_as("outer"):
        thread = threading.Thread(target=lambda: seen.append(identify({})))
        thread.start()
        thread.join()
    assert seen == [("default", "default")]


@pytest.mark.parametrize("headers", [{"tenant": "a b"}, {"tenant": "x" * 65},
                                     {"criticality": "urgent"}, {"tenant": 5}])
def test_a_bad_tenant_or_class_is_refused_before_anything_is_sent(headers) -> None:
    with pytest.raises(ValueError, match="tenant must be|criticality must be"):
        identify(dict(headers))
