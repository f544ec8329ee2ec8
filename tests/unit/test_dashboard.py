"""Every query of the Grafana dashboard names a metric that something exports.

A metric is exported when the API's own /metrics names it (TestClient, memory://
broker, SQLite), or when Flower defines it: Flower's names are read from its
installed source (flower/events.py), not from a list kept here.
"""
import ast
import importlib.util
import json
import os
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/floodgate.json"
DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources"

# What a panel of the dashboard must show, by the metric it reads.
REQUIRED = {
    "floodgate_queue_depth", "floodgate_queue_limit",  # depth against its limit
    "floodgate_refused_total",  # refusals per second
    "floodgate_queue_drain_rate",  # drain rate
    "floodgate_job_wait_seconds",  # wait of accepted jobs
    "floodgate_jobs_finished_last_minute",  # job outcomes
}

# PromQL words that look like names: aggregations, modifiers, operators, literals.
KEYWORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "limitk", "limit_ratio", "by", "without", "on", "ignoring",
    "group_left", "group_right", "bool", "and", "or", "unless", "offset", "atan2", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, ranges removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range and subquery windows ($__rate_interval)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("("):  # a function or an aggregation
            continue
        if m.group(0).lower() not in KEYWORDS:
            names.add(m.group(0))
    return names


def test_metric_names_reads_promql():
    refusals = 'sum by (queue) (rate(floodgate_refused_total{queue=~"a|b"}[$__rate_interval]))'
    assert metric_names(refusals) == {"floodgate_refused_total"}
    joined = "max by (state) (a_b) / on (state) group_left c:d offset 5m * 60"
    assert metric_names(joined) == {"a_b", "c:d"}
    p99 = "histogram_quantile(0.99, sum by (le) (rate(x_bucket[1m])))"
    assert metric_names(p99) == {"x_bucket"}


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]


def api_exported(text: str) -> set[str]:
    """Names /metrics exports: every sample's, and every family's (# TYPE), even if empty."""
    names = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
    return names


SUFFIXES = {  # the sample names prometheus-client exposes for each kind of metric
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
    "Info": ("_info",),
}


def flower_exported() -> set[str]:
    """The sample names of every prometheus-client metric Flower's events.py defines."""
    source = Path(importlib.util.find_spec("flower.events").origin)
    tree = ast.parse(source.read_text())
    kinds = {alias.asname or alias.name: alias.name
             for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and node.module == "prometheus_client"
             for alias in node.names if alias.name in SUFFIXES}
    names = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in kinds and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            kind, name = kinds[node.func.id], node.args[0].value
            base = name.removesuffix("_total") if kind == "Counter" else name
            names.update(base + suffix for suffix in SUFFIXES[kind])
    return names


def test_every_dashboard_query_names_an_exported_metric(client):
    ops = {"Authorization": f"Bearer {os.environ['OPS_TOKEN']}"}  # the operations credential
    answer = client.get("/metrics", headers=ops)
    assert answer.status_code == 200
    api, flower = api_exported(answer.text), flower_exported()
    assert {"flower_events_total", "flower_worker_online"} <= flower  # the source was read

    used = {name: expr for expr in dashboard_exprs() for name in metric_names(expr)}
    assert REQUIRED <= set(used)
    unknown = {name: expr for name, expr in used.items()
               if name not in (flower if name.startswith("flower_") else api)}
    assert not unknown, f"dashboard queries name metrics nothing exports: {unknown}"


def test_every_panel_reads_the_provisioned_datasource():
    uids = {ds["uid"] for f in DATASOURCES.glob("*.yml")
            for ds in yaml.safe_load(f.read_text())["datasources"]}
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert all(t["datasource"]["uid"] in uids for t in panel["targets"]), panel["title"]


def test_job_gauges_count_the_last_minute():
    """Outcomes and wait quantiles come from the jobs table, over the last 60 s only."""
    from api.metrics import JobsCollector, engine, jobs

    now = 4_000_000_000.0  # far from any real job in the shared test database
    rows = [  # (state, wait, started ago, finished ago)
        ("succeeded", 1.0, 5, 1), ("succeeded", 2.0, 5, 1), ("failed", 10.0, 5, 1),
        ("running", 3.0, 30, None), ("succeeded", 99.0, 600, 590),  # outside the window
    ]
    ids = [f"dash-{i}" for i in range(len(rows))]
    with engine().begin() as conn:
        conn.execute(jobs.insert(), [
            {"id": i, "kind": "fanout", "state": state, "created_at": now - ago - wait,
             "updated_at": now, "started_at": now - ago,
             "finished_at": None if done is None else now - done}
            for i, (state, wait, ago, done) in zip(ids, rows)])
    try:
        found = {(s.name, tuple(s.labels.values())): s.value
                 for family in JobsCollector(clock=lambda: now).collect()
                 for s in family.samples}
    finally:
        with engine().begin() as conn:
            conn.execute(jobs.delete().where(jobs.c.id.in_(ids)))
    assert found[("floodgate_jobs_finished_last_minute", ("succeeded",))] == 2
    assert found[("floodgate_jobs_finished_last_minute", ("failed",))] == 1
    assert found[("floodgate_jobs_finished_last_minute", ("abandoned",))] == 0
    assert found[("floodgate_jobs_started_last_minute", ())] == 4
    assert found[("floodgate_job_wait_seconds", ("0.5",))] == 2.0  # of 1, 2, 3, 10
    assert found[("floodgate_job_wait_seconds", ("0.99",))] == 10.0
