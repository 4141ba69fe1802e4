"""A real run of the dashboard: the application under mixed load, scraped by a real Prometheus,
every panel of docs/grafana/lookahead-dashboard.json queried from it, drawn into one PNG.

    python -m benchmarks.serving.dashboard_snapshot --minutes 5      # needs `prometheus` on PATH (apt: prometheus)

Starts local Ray with a metrics export port and the Serve application (SmolLM2-135M: hf target
with prompt-lookup token speculation, a vLLM draft, an hf judge), and a Prometheus scraping
Ray's endpoint every 5 s. Clients send a mix: greedy `lr` requests with the exact verifier,
sampled ones asking for the LLM judge, and some that are refused, time out or hang up. Then
each panel's PromQL, exactly as in the JSON ($__rate_interval = 1m, $session = all), goes
through Prometheus' query_range API; a query Prometheus rejects fails the run. matplotlib
draws the results on the dashboard's own grid. It is not a Grafana screenshot (no Grafana
here); it shows what the same queries return.

Writes the PNG (default docs/images/lookahead-dashboard.png) and the query results as JSON
(benchmarks/out/dashboard_snapshot.json), and prints per-outcome request counts.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "lookahead-dashboard.json"
QUESTIONS = ["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
             "How many clips did Natalia sell altogether in April and May?",
             "What is 17 times 23? Think step by step.", "Name three primary colours and say why.",
             "A train travels 60 km in 45 minutes. What is its speed in km/h?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot_config(http_port: int, grpc_port: int):
    from deployments.config import (AppConfig, EngineConfig, LookaheadDefaults, RoleConfig, RoleDeployment,
                                    ServerConfig, VerifierConfig)

    def role(engine: str, gpus: float, **kw) -> RoleConfig:
        return RoleConfig(engine=EngineConfig(model="smollm2-135m", engine=engine, **kw),
                          deployment=RoleDeployment(num_gpus=gpus, num_cpus=0, max_ongoing_requests=32))

    front = RoleDeployment(num_cpus=0, max_ongoing_requests=64)
    return AppConfig(
        target=role("hf", 1, token_speculation="ngram"),
        draft=role("vllm", 1, engine_kwargs={"max_model_len": 2048}),
        judge=role("hf", 0.5),
        verifier=VerifierConfig(kind="exact"),
        defaults=LookaheadDefaults(depth="auto", max_tokens=64),
        server=ServerConfig(orchestrator=front, ingress=front, max_tokens_limit=128, judge_timeout_s=2.0,
                            http_port=http_port, grpc_port=grpc_port))


def start_prometheus(binary: str, target: str, port: int, workdir: Path) -> subprocess.Popen:
    cfg = workdir / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
                   f"scrape_configs:\n  - job_name: ray\n    static_configs:\n      - targets: ['{target}']\n")
    return subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(workdir / "prometheus.log", "w"))


async def client(i: int, url: str, end: float, tally: dict) -> None:
    """One user: mostly greedy lr requests; sometimes the judge, a refusal, a deadline, a hang-up."""
    rng = random.Random(i)
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        while time.monotonic() < end:
            kind = rng.choices(["lr", "judge", "refused", "timeout", "hangup"], [8, 3, 1, 2, 1])[0]
            body = {"model": "lookahead", "messages": [{"role": "user", "content": rng.choice(QUESTIONS)}],
                    "max_tokens": 64, "temperature": 0}
            headers = {}
            if kind == "judge":
                body.update(temperature=0.8, lookahead={"verifier": "llm-judge"})
            elif kind == "refused":
                body["max_tokens"] = 4096  # over the server's max_tokens_limit
            elif kind == "timeout":
                headers["x-request-timeout"] = "0.5"
            try:
                if kind == "hangup":
                    async with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                        async for _ in r.aiter_lines():
                            break  # the first event, then go away
                    status = "hangup"
                else:
                    r = await http.post("/v1/chat/completions", json=body, headers=headers)
                    status = str(r.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            tally[f"{kind}:{status}"] = tally.get(f"{kind}:{status}", 0) + 1


def query_range(prom: str, expr: str, start: float, end: float, step: int) -> list[dict]:
    qs = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{qs}", timeout=60) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus rejected {expr!r}: {body}")
    return body["data"]["result"]


def legend(fmt: str, labels: dict) -> str:
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out.replace("{{", "").replace("}}", "") or str(labels)


def collect(prom: str, dashboard: dict, start: float, end: float, step: int = 10) -> list[dict]:
    panels = []
    for p in dashboard["panels"]:
        if p["type"] != "timeseries":
            panels.append({"type": p["type"], "title": p["title"], "gridPos": p["gridPos"]})
            continue
        series = []
        for t in p["targets"]:
            expr = t["expr"].replace("$__rate_interval", "1m").replace("$session", ".*")
            for r in query_range(prom, expr, start, end, step):
                pts = [(float(ts), float(v)) for ts, v in r["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if pts:
                    series.append({"name": legend(t.get("legendFormat", ""), r["metric"]), "points": pts})
        panels.append({"type": "timeseries", "title": p["title"], "gridPos": p["gridPos"],
                       "unit": p["fieldConfig"]["defaults"].get("unit", "short"), "series": series})
    return panels


def draw(panels: list[dict], out: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_px = 34  # one grid row
    fig = plt.figure(figsize=(24, rows * unit_px / 100 + 1.2), dpi=100, facecolor="#111217")
    fig.suptitle("Lookahead Reasoning — docs/grafana/lookahead-dashboard.json\n" + subtitle,
                 color="#d8d9da", fontsize=13, y=0.998)
    top = 1 - 1.0 / (rows * unit_px / 100 + 1.2)
    for p in panels:
        g = p["gridPos"]
        x0, w = g["x"] / 24, g["w"] / 24
        y0, h = top - (g["y"] + g["h"]) / rows * top, g["h"] / rows * top
        if p["type"] == "row":
            fig.text(x0 + 0.004, y0 + h * 0.3, p["title"], color="#d8d9da", fontsize=12, weight="bold")
            continue
        ax = fig.add_axes([x0 + 0.03, y0 + 0.02 * top, w - 0.04, h - 0.05 * top], facecolor="#181b1f")
        ax.set_title(p["title"], color="#d8d9da", fontsize=10, loc="left")
        ax.tick_params(colors="#8e8e8e", labelsize=7)
        for s in ax.spines.values():
            s.set_color("#2c3235")
        ax.grid(color="#2c3235", linewidth=0.5)
        if not p["series"]:
            ax.text(0.5, 0.5, "No data", color="#8e8e8e", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        t0 = min(pt[0] for s in p["series"] for pt in s["points"])
        for s in p["series"][:10]:
            xs = [(t - t0) / 60 for t, _ in s["points"]]
            ax.plot(xs, [v for _, v in s["points"]], linewidth=1.2, label=s["name"][:40])
        ax.set_xlabel("minutes", color="#8e8e8e", fontsize=7)
        if p["unit"] == "percentunit":
            ax.set_ylim(bottom=0)
        ax.legend(fontsize=6, loc="upper left", facecolor="#181b1f", labelcolor="#d8d9da", framealpha=0.6)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, facecolor=fig.get_facecolor())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="load duration")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "prometheus")
    ap.add_argument("--png", default=str(ROOT / "docs" / "images" / "lookahead-dashboard.png"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "dashboard_snapshot.json"))
    args = ap.parse_args(argv)
    if not shutil.which(args.prometheus):
        print(f"{args.prometheus}: not found (Debian/Ubuntu: apt-get install prometheus)", file=sys.stderr)
        return 2

    import ray
    from ray import serve

    from deployments.app import start_local

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="lookahead-dash-"))
    metrics_port, prom_port, http_port = free_port(), free_port(), free_port()
    ray.init(num_cpus=4, num_gpus=3, object_store_memory=256 * 1024**2, include_dashboard=False,
             log_to_driver=False, _temp_dir=str(work / "ray"), _metrics_export_port=metrics_port)
    prom = start_prometheus(args.prometheus, f"127.0.0.1:{metrics_port}", prom_port, work)
    prom_url = f"http://127.0.0.1:{prom_port}"
    try:
        t0 = time.time()
        start_local(snapshot_config(http_port, free_port()), quiet=True)
        print(f"application up in {time.time() - t0:.0f} s; load for {args.minutes:g} min, "
              f"{args.clients} clients", flush=True)
        tally: dict[str, int] = {}
        begin = time.time()
        end = time.monotonic() + args.minutes * 60

        async def load():
            await asyncio.gather(*(client(i, f"http://127.0.0.1:{http_port}", end, tally)
                                   for i in range(args.clients)))

        asyncio.run(load())
        time.sleep(20)  # the last samples: Ray exports every few seconds, Prometheus scrapes every 5
        finish = time.time()
        panels = collect(prom_url, json.loads(DASHBOARD.read_text()), begin, finish)
    finally:
        prom.terminate()
        serve.shutdown()
        ray.shutdown()
    empty = [p["title"] for p in panels if p["type"] == "timeseries" and not p["series"]]
    subtitle = (f"every panel's PromQL queried from Prometheus 2.42 over a {args.minutes:g}-minute run on a "
                f"2-core CPU box ({args.clients} clients), drawn with matplotlib: not a Grafana screenshot")
    draw(panels, Path(args.png), subtitle)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"requests": tally, "minutes": args.minutes, "clients": args.clients,
                                           "empty_panels": empty, "panels": panels}, indent=1))
    print("requests (kind:outcome):", json.dumps(dict(sorted(tally.items()))))
    print(f"panels without data: {empty or 'none'}")
    print(f"wrote {args.png} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
