"""docs/grafana/lookahead-dashboard.json against the metrics catalogue (deployments/serve/metrics.py).

Offline: the dashboard must import as is (a Prometheus data-source variable, no hard-wired data
source, panels on Grafana's 24-column grid without overlaps), and every query must name series
the application exports or Ray Serve and vLLM export (`OTHERS`, whose names are read here from the
installed ray and vllm), group by labels those series carry, and cover every series. That Serve's
series are on the metrics endpoint with those labels is tests/serve/test_metrics_serve.py; that
the PromQL runs and returns data is shown by benchmarks/serving/dashboard_snapshot.py against a
real Prometheus (docs/observability.md).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from deployments.serve.metrics import OTHERS, SERIES
from tests.support.paths import ROOT

DASHBOARD = json.loads((ROOT / "docs" / "grafana" / "lookahead-dashboard.json").read_text())
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
EXPRS = [t["expr"] for p in PANELS for t in p["targets"]]
RAY_LABELS = {"SessionName", "WorkerId", "NodeAddress", "ReplicaId"}


def known_series() -> dict[str, set[str]]:
    """Exported sample name -> labels it carries."""
    out = {name: set(labels) for name, labels in OTHERS.items()}
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


def test_other_series_are_what_the_installed_ray_and_vllm_export():
    """Ray Serve's metric names and tag keys, and vLLM's names, as string literals in their sources:
    a Ray or vLLM upgrade that renames one fails here, not silently on an empty panel."""
    import ray.serve
    import vllm

    serve_src = "".join(p.read_text() for p in Path(ray.serve.__file__).parent.rglob("*.py"))
    serve_src = serve_src.replace("{protocol_name}", "http")  # f"serve_num_{protocol_name}_error_requests"
    vllm_src = "".join(p.read_text() for p in Path(vllm.__file__).parent.joinpath("v1", "metrics").rglob("*.py"))
    for name, labels in OTHERS.items():
        if name.startswith("ray_serve_"):
            metric = name.removeprefix("ray_").removesuffix("_total")
            assert re.search(rf'"{metric}(_total)?"', serve_src), f"Ray Serve defines no {metric}"
            for label in labels:
                assert f'"{label}"' in serve_src, label
        else:
            assert f'"vllm:{name.removeprefix("ray_vllm_").removesuffix("_total")}"' in vllm_src, name
            assert labels == ("ReplicaId",) and '"ReplicaId"' in vllm_src  # vLLM's Ray wrappers' tag


def test_every_series_has_a_panel():
    used = set().union(*(series_in(e) for e in EXPRS))
    for s in SERIES.values():
        names = {s.exported} if s.kind != "histogram" else {f"{s.exported}_bucket", f"{s.exported}_count"}
        assert used & names, f"{s.exported} is on no panel"


def test_the_areas_the_issue_names_are_there():
    rows = [p["title"] for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert rows[:5] == ["Traffic", "Latency", "Speculation", "Where a cycle's time goes", "Errors"]
    assert rows[5:] == ["Serve: replicas and queues", "Engines by role (vllm:* via Ray)"]
    titles = " | ".join(p["title"] for p in PANELS)
    for want in ("Time to first token", "Time per output token", "Step acceptance by depth", "Errors / s",
                 "Replicas per deployment", "Replica health", "Serve queue depth", "KV cache usage by role"):
        assert want in titles
    # every vLLM panel tells the roles apart: its series joined to their Serve deployment by replica id
    for e in EXPRS:
        if "ray_vllm_" in e:
            assert "on (ReplicaId) group_left (deployment)" in e and "by (deployment" in e, e
            assert 'label_replace(' in e and '"ReplicaId", "$1", "replica"' in e, e
    replicas = [e for e in EXPRS if "ray_serve_deployment_replica_healthy" in e and "ray_vllm_" not in e]
    assert any(e.startswith("sum by (deployment)") for e in replicas)  # the count per deployment
    assert any("by (deployment, replica)" in e for e in replicas)  # health per replica
    quantiles = [e for e in EXPRS if "histogram_quantile" in e]
    assert all("_bucket{" in e and "by (le" in e for e in quantiles)  # quantiles over the buckets


def test_snapshot_image_is_committed():
    png = ROOT / "docs" / "images" / "lookahead-dashboard.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "images/lookahead-dashboard.png" in (ROOT / "docs" / "observability.md").read_text()
