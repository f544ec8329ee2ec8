"""Limits as a user writes them (``500``, ``"30s"``, ``"emails=500,reports=30s"``), and
install() refusing limits that do not fit the app. No broker connection is made."""
from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from celery import Celery
from hypothesis import given
from hypothesis import strategies as st

from celery_floodgate import Limit, NotInstalled, guard_for, install, parse_limit, parse_limits
from celery_floodgate.limits import MAX_LENGTH, MAX_WAIT_S
from conftest import PROJECT, broker_url

QUEUE_NAMES = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,15}\Z")
LENGTHS = st.integers(min_value=1, max_value=MAX_LENGTH)
#: Waits as users write them: whole seconds or up to two decimals, 0 < wait <= MAX_WAIT_S.
WAITS = st.integers(min_value=1, max_value=MAX_WAIT_S * 100).map(lambda cs: cs / 100)


def wait_text(wait_s: float) -> str:
    return f"{wait_s:g}s"


# --- lengths and waits ------------------------------------------------------------------

@given(queue=QUEUE_NAMES, length=LENGTHS, pad=st.sampled_from(["", " ", "  "]))
def test_a_whole_number_is_a_length_written_as_int_or_text(queue, length, pad) -> None:
    expected = Limit(queue, length=length)
    assert parse_limit(queue, length) == expected
    assert parse_limit(queue, f"{pad}{length}{pad}") == expected


@given(queue=QUEUE_NAMES, wait_s=WAITS, gap=st.sampled_from(["", " "]))
def test_seconds_with_an_s_are_a_wait(queue, wait_s, gap) -> None:
    limit = parse_limit(queue, f"{wait_s:g}{gap}s")
    assert limit == Limit(queue, wait_s=wait_s)
    assert limit.length is None


@given(queue=QUEUE_NAMES, limit=st.one_of(
    LENGTHS.map(lambda n: ("length", n)), WAITS.map(lambda w: ("wait", w))))
def test_a_limit_describes_itself_in_the_form_it_parses_from(queue, limit) -> None:
    kind, value = limit
    parsed = parse_limit(queue, value if kind == "length" else wait_text(value))
    assert parse_limit(queue, parsed.describe()) == parsed


@given(length=st.one_of(st.just(0), st.integers(min_value=MAX_LENGTH + 1)))
def test_a_length_outside_1_to_the_maximum_is_refused_with_the_range(length) -> None:
    for value in (length, str(length)):
        with pytest.raises(ValueError, match=rf"length limit for 'emails' must be a whole "
                                             rf"number 1\.\.{MAX_LENGTH}"):
            parse_limit("emails", value)


@given(length=st.integers(max_value=-1))
def test_a_negative_length_is_refused_naming_both_forms(length) -> None:
    with pytest.raises(ValueError, match=r"limit for 'emails' is -\d+: expected a length"):
        parse_limit("emails", length)


@given(wait_s=st.one_of(st.just(0), st.integers(min_value=MAX_WAIT_S + 1, max_value=10**9)))
def test_a_wait_outside_0_to_an_hour_is_refused_with_the_range(wait_s) -> None:
    with pytest.raises(ValueError, match=rf"wait limit for 'reports' must be between 0 "
                                         rf"and {MAX_WAIT_S} s"):
        parse_limit("reports", f"{wait_s}s")


@given(hundredths=st.integers(min_value=101, max_value=100_000).filter(lambda n: n % 100))
def test_a_fractional_length_is_refused(hundredths) -> None:
    with pytest.raises(ValueError, match="whole number"):
        parse_limit("emails", f"{hundredths / 100:.2f}")


#: Text holding any character a limit never contains cannot be a limit.
NOT_A_LIMIT = st.text(min_size=1, max_size=12).filter(
    lambda text: bool(re.search(r"[^0-9.s\s]", text)))


@given(text=NOT_A_LIMIT)
def test_text_that_is_neither_a_length_nor_a_wait_is_refused_with_a_sentence(text) -> None:
    with pytest.raises(ValueError) as refused:
        parse_limit("emails", text)
    sentence = str(refused.value)
    assert "'emails'" in sentence
    assert "a length (500)" in sentence and "a wait ('30s')" in sentence


@pytest.mark.parametrize("value", [True, False, 2.5, None, [20], {"n": 20}])
def test_values_of_other_types_are_refused_naming_both_forms(value) -> None:
    with pytest.raises(ValueError, match=r"limit for 'emails' .*a length \(500\) or a wait"):
        parse_limit("emails", value)


# --- many limits at once ----------------------------------------------------------------

SPECS = st.dictionaries(QUEUE_NAMES, st.one_of(LENGTHS, WAITS.map(wait_text)),
                        min_size=1, max_size=6)


@given(spec=SPECS, sep=st.sampled_from([",", ", ", " , "]))
def test_text_and_mapping_forms_mean_the_same_limits(spec, sep) -> None:
    text = sep.join(f"{queue}={value}" for queue, value in spec.items())
    from_text, from_mapping = parse_limits(text), parse_limits(spec)
    assert from_text == from_mapping
    assert set(from_mapping) == set(spec)
    assert all(limit.queue == queue for queue, limit in from_mapping.items())


def test_empty_parts_of_the_text_form_are_ignored() -> None:
    assert parse_limits("emails=5,,reports=2s,") == {
        "emails": Limit("emails", length=5), "reports": Limit("reports", wait_s=2.0)}
    assert parse_limits("") == {}


@pytest.mark.parametrize("text", ["emails:500", "emails", "=5", "9lives=5", "a b=5"])
def test_a_part_that_is_not_queue_equals_limit_is_refused_quoting_it(text) -> None:
    with pytest.raises(ValueError, match="is not queue=length or queue=<seconds>s"):
        parse_limits(text)


def test_one_bad_limit_among_good_ones_names_its_queue() -> None:
    with pytest.raises(ValueError, match="limit for 'reports' is 'soon'"):
        parse_limits({"emails": 500, "reports": "soon"})


# --- install() checks the limits against the plain project's routes --------------------
# The project routes tasks.slow and tasks.add to "bounded"; its default queue is "celery".

@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The plain project's config.py, imported fresh (it reads its broker URL from the
    environment; nothing connects)."""
    monkeypatch.setenv("LIB_TEST_BROKER_URL", broker_url())
    monkeypatch.syspath_prepend(str(PROJECT))
    sys.modules.pop("config", None)
    import config as project_config

    yield project_config
    sys.modules.pop("config", None)


def app_from(config: ModuleType, broker: str | None = None) -> Celery:
    app = Celery("tasks", set_as_current=False)
    app.config_from_object(config)
    if broker is not None:
        app.conf.broker_url = broker
    return app


def refused_install(app: Celery, limits, **options) -> str:
    """install() must refuse and leave the app exactly as it was; the sentence it gave."""
    with pytest.raises(NotInstalled) as refused:
        install(app, limits, "redis://127.0.0.1:1/0", **options)
    assert guard_for(app) is None
    assert app.conf.broker_transport is None
    assert isinstance(refused.value, ValueError)
    sentence = str(refused.value)
    assert sentence.startswith("back pressure not installed: ")
    return sentence


def test_the_project_installs_with_a_limit_on_each_queue_it_routes_to(config) -> None:
    app = app_from(config)
    guard = install(app, {"bounded": 20, "celery": 1000}, "redis://127.0.0.1:1/0")
    assert guard_for(app) is guard
    assert guard.limits == {"bounded": Limit("bounded", length=20),
                            "celery": Limit("celery", length=1000)}


def test_a_limit_on_a_queue_the_app_never_routes_to_is_refused(config) -> None:
    sentence = refused_install(app_from(config), {"bounded": 20, "celery": 5, "emails": 5})
    assert "'emails', which the app never routes to" in sentence
    assert "route a task there" in sentence and "drop the limit" in sentence


def test_a_routed_queue_without_a_limit_is_refused_unless_named_unbounded(config) -> None:
    sentence = refused_install(app_from(config), {"celery": 1000})
    assert "routes to 'bounded' without a limit" in sentence
    assert "unbounded=" in sentence
    guard = install(app_from(config), {"celery": 1000}, "redis://127.0.0.1:1/0",
                    unbounded=["bounded"])
    assert set(guard.limits) == {"celery"}


def test_the_default_queue_needs_a_limit_too(config) -> None:
    app = app_from(config)
    guard = install(app, {"bounded": 20}, "redis://127.0.0.1:1/0", unbounded=["celery"])
    assert set(guard.limits) == {"bounded"}


@pytest.mark.parametrize("limits, problem", [
    ({"bounded": "lots", "celery": 5}, "limit for 'bounded' is 'lots'"),
    ({"bounded": 0, "celery": 5}, "whole number 1.."),
    ("bounded:20", "is not queue=length"),
])
def test_a_malformed_limit_is_refused_as_not_installed(config, limits, problem) -> None:
    assert problem in refused_install(app_from(config), limits)


@pytest.mark.parametrize("scheme", ["amqp", "amqps", "pyamqp"])
def test_a_wait_limit_on_rabbitmq_is_refused_naming_the_queue(config, scheme) -> None:
    app = app_from(config, f"{scheme}://guest:guest@127.0.0.1:1//")
    sentence = refused_install(app, {"bounded": "30s", "celery": 1000})
    assert "wait limits ('bounded') need the Redis broker" in sentence
    assert "give a length" in sentence


def test_a_wait_limit_on_redis_installs_and_is_bounded_before_any_rate_is_known(config) -> None:
    from celery_floodgate.limits import WAIT_LIMIT_BOOTSTRAP_LENGTH

    guard = install(app_from(config, "redis://127.0.0.1:1/0"), "bounded=30s,celery=1000")
    assert guard.limits["bounded"] == Limit("bounded", wait_s=30.0)
    assert guard.length_bound(guard.limits["bounded"]) == WAIT_LIMIT_BOOTSTRAP_LENGTH
