"""docs/grafana/lookahead-dashboard.json against the metrics catalogue (deployments/serve/metrics.py).

Offline: the dashboard must import as is (a Prometheus data-source variable, no hard-wired data
source, panels on Grafana's 24-column grid without overlaps), and every query must name series
the application exports, group by labels those series carry, and cover every series. That its
PromQL runs and returns data is shown by benchmarks/serving/dashboard_snapshot.py against a real
Prometheus (docs/observability.md).
"""
from __future__ import annotations

import json
import re

from deployments.serve.metrics import SERIES
from tests.support.paths import ROOT

DASHBOARD = json.loads((ROOT / "docs" / "grafana" / "lookahead-dashboard.json").read_text())
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
EXPRS = [t["expr"] for p in PANELS for t in p["targets"]]
# Series from outside our catalogue the dashboard may use: Ray Serve's and vLLM's own.
OTHERS = {"ray_serve_num_http_error_requests_total": {"error_code"},
          "ray_vllm_kv_cache_usage_perc": {"ReplicaId"}, "ray_vllm_num_requests_running": {"ReplicaId"},
          "ray_vllm_num_requests_waiting": {"ReplicaId"}, "ray_vllm_generation_tokens_total": {"ReplicaId"}}
RAY_LABELS = {"SessionName", "WorkerId", "NodeAddress", "ReplicaId"}


def known_series() -> dict[str, set[str]]:
    """Exported sample name -> labels it carries."""
    out = dict(OTHERS)
    for s in SERIES.values():
        names = [s.exported] if s.kind != "histogram" else [f"{s.exported}_{x}" for x in ("bucket", "count", "sum")]
        for n in names:
            out[n] = set(s.tags) | ({"le"} if n.endswith("_bucket") else set())
    return out


def series_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(ray_[a-z0-9_]+)", expr))


def test_imports_as_is():
    names = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert names["datasource"]["type"] == "datasource" and names["datasource"]["query"] == "prometheus"
    assert "__inputs" not in DASHBOARD and DASHBOARD.get("id") is None and DASHBOARD["uid"]
    for p in PANELS:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


def test_panels_tile_the_grid():
    cells: dict[tuple[int, int], str] = {}
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_queries_name_exported_series_and_their_labels():
    known = known_series()
    for expr in EXPRS:
        used = series_in(expr)
        assert used and used <= set(known), f"unknown series in {expr}: {used - set(known)}"
        assert 'SessionName=~"$session"' in expr, expr
        labels = set().union(*(known[n] for n in used)) | RAY_LABELS
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",")):
                assert label in labels, f"{label!r} is not a label of {used}: {expr}"
        for label in re.findall(r"([A-Za-z_]+)\s*(?:=~|!=|=)\s*\"", expr):
            assert label in labels, f"{label!r} is not a label of {used}: {expr}"
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_every_series_has_a_panel():
    used = set().union(*(series_in(e) for e in EXPRS))
    for s in SERIES.values():
        names = {s.exported} if s.kind != "histogram" else {f"{s.exported}_bucket", f"{s.exported}_count"}
        assert used & names, f"{s.exported} is on no panel"


def test_the_areas_the_issue_names_are_there():
    rows = [p["title"] for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert rows[:5] == ["Traffic", "Latency", "Speculation", "Where a cycle's time goes", "Errors"]
    titles = " | ".join(p["title"] for p in PANELS)
    for want in ("Time to first token", "Time per output token", "Step acceptance by depth", "Errors / s"):
        assert want in titles
    quantiles = [e for e in EXPRS if "histogram_quantile" in e]
    assert all("_bucket{" in e and "by (le" in e for e in quantiles)  # quantiles over the buckets


def test_snapshot_image_is_committed():
    png = ROOT / "docs" / "images" / "lookahead-dashboard.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "images/lookahead-dashboard.png" in (ROOT / "docs" / "observability.md").read_text()
