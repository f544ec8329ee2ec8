"""Fair admission's settings: FAIR_ADMISSION, FAIR_WATERMARK, the class fractions,
TENANT_WEIGHTS and CRITICAL_USERS, parsed at start and failing with a sentence."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celery_floodgate.fairness import CRITICAL, DEFAULT, SHEDDABLE, Fairness, check_tenant
from config.settings import (
    TENANT_WEIGHT_MAX,
    Settings,
    parse_tenant_weights,
    parse_user_names,
)
from tests.unit.test_settings import error_sentence, settings_from

BASE = {"BROKER_URL": "redis://h", "DATABASE_URL": "sqlite:///x"}
FAIR_VARS = ("FAIR_ADMISSION", "FAIR_WATERMARK", "FAIR_SHEDDABLE_FRACTION",
             "FAIR_DEFAULT_FRACTION", "TENANT_WEIGHTS", "CRITICAL_USERS")

tenants = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
weights = st.floats(min_value=0, max_value=TENANT_WEIGHT_MAX, exclude_min=True,
                    allow_nan=False)


@pytest.fixture
def fair_env(monkeypatch):
    for name in FAIR_VARS:
        monkeypatch.delenv(name, raising=False)
    return lambda **env: settings_from(monkeypatch, **BASE, **env)


def test_fair_admission_is_on_by_default_with_the_documented_policy(fair_env):
    policy = fair_env().fairness()
    assert policy == Fairness(watermark=0.5, weights={},
                              class_fractions={SHEDDABLE: 0.5, DEFAULT: 0.9, CRITICAL: 1.0})


def test_fair_admission_off_installs_first_come_first_served(fair_env):
    assert fair_env(FAIR_ADMISSION="false").fairness() is None


def test_the_settings_reach_the_policy(fair_env):
    policy = fair_env(FAIR_WATERMARK="0.6", FAIR_SHEDDABLE_FRACTION="0.3",
                      FAIR_DEFAULT_FRACTION="0.8", TENANT_WEIGHTS="alice=2, bob=0.5").fairness()
    assert policy.watermark == 0.6
    assert policy.class_bound(100, SHEDDABLE) == 30
    assert policy.class_bound(100, DEFAULT) == 80
    assert policy.class_bound(100, CRITICAL) == 100
    assert policy.weight("alice") == 2 and policy.weight("bob") == 0.5
    assert policy.weight("carol") == 1


@pytest.mark.parametrize("env, named", [
    ({"TENANT_WEIGHTS": "alice"}, "'alice', which is not user=weight"),
    ({"TENANT_WEIGHTS": "=2"}, "not user=weight"),
    ({"TENANT_WEIGHTS": "alice=lots"}, "'lots', which is not a number"),
    ({"TENANT_WEIGHTS": "alice=0"}, "a weight is above 0"),
    ({"TENANT_WEIGHTS": "alice=-1"}, "a weight is above 0"),
    ({"TENANT_WEIGHTS": "alice=1001"}, f"at most {TENANT_WEIGHT_MAX}"),
    ({"TENANT_WEIGHTS": "alice=nan"}, "a weight is above 0"),
    ({"TENANT_WEIGHTS": "alice=1,alice=2"}, "'alice' twice"),
    ({"TENANT_WEIGHTS": "al ice=1"}, "without spaces"),
    ({"CRITICAL_USERS": "alice bob"}, "'alice bob', which is not a user name"),
    ({"FAIR_WATERMARK": "0"}, "FAIR_WATERMARK"),
    ({"FAIR_DEFAULT_FRACTION": "1.5"}, "FAIR_DEFAULT_FRACTION"),
    ({"FAIR_SHEDDABLE_FRACTION": "0.95"}, "FAIR_SHEDDABLE_FRACTION (0.95) must be at most "
                                          "FAIR_DEFAULT_FRACTION (0.9)"),
])
def test_a_bad_fairness_setting_stops_the_start_with_a_sentence_naming_it(
        monkeypatch, env, named):
    for name in FAIR_VARS:
        monkeypatch.delenv(name, raising=False)
    sentence = error_sentence(monkeypatch, **BASE, **env)
    variable = next(iter(env))
    assert named in sentence
    assert variable in sentence


def test_only_the_users_named_may_submit_critical_work_and_everyone_the_rest(fair_env):
    settings = fair_env(CRITICAL_USERS=" ops-bot , alice ")
    assert settings.may_submit("alice", CRITICAL)
    assert settings.may_submit("ops-bot", CRITICAL)
    assert not settings.may_submit("bob", CRITICAL)
    assert not settings.may_submit("Alice", CRITICAL)  # names are exact
    assert all(settings.may_submit(name, c) for name in ("bob", "alice")
               for c in (SHEDDABLE, DEFAULT))


def test_nobody_may_submit_critical_work_by_default(fair_env):
    assert not fair_env().may_submit("alice", CRITICAL)


@given(st.dictionaries(tenants, weights, max_size=8), st.sampled_from(["", " ", "  "]))
def test_weights_written_out_parse_back_to_the_same(mapping, pad):
    text = ",".join(f"{pad}{t}{pad}={pad}{w!r}{pad}" for t, w in mapping.items())
    assert parse_tenant_weights(text) == mapping


@given(st.text(alphabet=st.sampled_from("ab=,. -0123456789e+xn"), max_size=30))
def test_any_text_either_parses_to_weights_the_policy_accepts_or_is_refused_in_words(text):
    try:
        parsed = parse_tenant_weights(text)
    except ValueError as exc:
        assert str(exc)  # a sentence, never another exception
        return
    assert all(0 < w <= TENANT_WEIGHT_MAX and math.isfinite(w) for w in parsed.values())
    assert all(check_tenant(t) == t for t in parsed)
    Fairness(weights=parsed)  # the library takes whatever the setting took


@given(st.lists(tenants, max_size=6))
def test_user_names_listed_with_commas_are_the_set_of_them(names):
    assert parse_user_names(" , ".join(names)) == frozenset(names)


def test_settings_without_fairness_variables_still_build(fair_env):
    assert isinstance(fair_env(), Settings)
