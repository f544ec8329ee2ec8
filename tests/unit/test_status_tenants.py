"""Per-tenant figures on ``floodgate status`` and /metrics stay bounded and add up: the
busiest tenants are named, the rest summed as "other", and no count goes missing."""
from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from api.metrics import TenantHeldCollector, top_held
from config import status
from config.tenant_status import OTHER, TOP_TENANTS, tenant_rows, tenant_table

names = st.sampled_from([f"t{i}" for i in range(30)] + [OTHER])
count_rows = st.lists(st.tuples(names, st.sampled_from(["sheddable", "default", "critical"]),
                                st.integers(0, 500), st.integers(0, 500)),
                      max_size=60, unique_by=lambda r: (r[0], r[1]))
held_maps = st.dictionaries(names, st.integers(0, 1000), max_size=30)


@given(count_rows, held_maps)
def test_the_screen_names_at_most_the_top_tenants_and_keeps_every_count(counts, held):
    rows = tenant_rows(counts, held)
    assert len({r["tenant"] for r in rows} - {OTHER}) <= TOP_TENANTS
    assert sum(r["accepted_last_minute"] for r in rows) == sum(c[2] for c in counts)
    assert sum(r["refused_last_minute"] for r in rows) == sum(c[3] for c in counts)
    assert sum(r["held"] for r in rows) == sum(held.values())
    tenants_in_order = list(dict.fromkeys(r["tenant"] for r in rows))
    assert OTHER not in tenants_in_order[:-1]  # "other" comes last


def test_a_busy_tenant_shows_per_class_and_its_held_on_its_first_row():
    counts = [("noisy", "sheddable", 40, 900), ("noisy", "default", 5, 0),
              ("polite", "default", 12, 0)]
    rows = tenant_rows(counts, {"noisy": 480, "polite": 3, "idle": 2})
    assert rows == [
        {"tenant": "noisy", "criticality": "sheddable", "accepted_last_minute": 40,
         "refused_last_minute": 900, "held": 480},
        {"tenant": "noisy", "criticality": "default", "accepted_last_minute": 5,
         "refused_last_minute": 0, "held": 0},
        {"tenant": "polite", "criticality": "default", "accepted_last_minute": 12,
         "refused_last_minute": 0, "held": 3},
        {"tenant": "idle", "criticality": "-", "accepted_last_minute": 0,
         "refused_last_minute": 0, "held": 2},
    ]


def test_the_tenant_table_is_printed_after_beat_and_only_when_a_queue_has_tenants():
    rows = tenant_rows([("acme", "critical", 7, 1)], {"acme": 4})
    data = {"at": 0.0, "broker": "redis", "workers": {},
            "beat": {"tick": None, "tick_ago_s": None, "entries": {}},
            "queues": {"fanout": {"depth": 4, "limit": 20, "wait_limit_s": None, "bound": 20,
                                  "drain_rate": 1.0, "accepted_last_minute": 7,
                                  "refused_last_minute": 1, "oldest_age_s": 0.5,
                                  "tenants": rows}}}
    console = Console(width=120, record=True)
    console.print(status.render(data))
    screen = console.export_text()
    assert screen.index("Beat (") < screen.index("Tenants (")
    line = next(ln for ln in screen.splitlines() if "acme" in ln)
    assert [c.strip() for c in line.split("│") if c.strip()] == [
        "fanout", "acme", "critical", "7", "1", "4"]
    data["queues"]["fanout"]["tenants"] = []
    assert tenant_table(data["queues"]) is None


def test_held_per_tenant_names_the_top_and_sums_the_rest_as_other():
    held = {f"t{i:02d}": i for i in range(1, 31)}
    top = top_held(held, 20)
    assert top[:2] == [("t30", 30), ("t29", 29)]
    assert top[-1] == (OTHER, sum(range(1, 11)))
    assert len(top) == 21
    assert top_held({"a": 1}, 20) == [("a", 1)]


def test_metrics_export_held_per_tenant_from_the_guard(monkeypatch):
    guard = SimpleNamespace(fairness=object(), limits={"fanout": None},
                            tenant_held=lambda queue: {f"t{i}": 1 for i in range(25)})
    monkeypatch.setattr("api.metrics.guard_for", lambda app: guard)
    (family,) = TenantHeldCollector().collect()
    tenants = {s.labels["tenant"] for s in family.samples}
    assert len(tenants) == 21 and OTHER in tenants
    assert sum(s.value for s in family.samples) == 25
    guard.fairness = None
    (family,) = TenantHeldCollector().collect()
    assert family.samples == []
