"""`lookahead serve --address` onto a Ray cluster of three nodes (three raylets on this machine, each
advertising its own custom resource): each engine role asks for its node's resource
(`RoleDeployment.resources`), so Ray's state API must show the draft, target and judge replicas on
three different nodes, and requests must pass between them: a greedy one whose drafts (from the
draft node) the target node's steps accept, and a sampled one the judge node rules on.
SmolLM2-135M in every role keeps it cheap."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from deployments.config import AppConfig, EngineConfig, LookaheadDefaults, RoleConfig, RoleDeployment, ServerConfig
from deployments.config import VerifierConfig
from tests.support.data import gsm8k
from tests.support.paths import ROOT
from tests.support.processes import free_port
from tests.support.ray_nodes import LocalCluster
from tests.support.serve_app import TEST_WARMUP
from tests.support.serving import wait_answering

pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.cli]

#: node -> the custom resource it advertises; the first node is the head
NODES = {"target": {"node_target": 1}, "draft": {"node_draft": 1}, "judge": {"node_judge": 1}}
QUESTION = [{"role": "user", "content": gsm8k(1)[0]["question"]}]


def pinned(role: str) -> RoleConfig:
    return RoleConfig(engine=EngineConfig(model="smollm2-135m"),
                      deployment=RoleDeployment(num_cpus=0, num_gpus=0, max_ongoing_requests=8,
                                                resources={f"node_{role}": 1}), warmup=TEST_WARMUP)


def multinode_config() -> AppConfig:
    front = RoleDeployment(num_cpus=0, max_ongoing_requests=16)
    return AppConfig(
        target=pinned("target"), draft=pinned("draft"), judge=pinned("judge"),
        # no guards in front of the judge: it, not a guard, rules on the sampled drafts
        verifier=VerifierConfig(kind="exact", numeric_guard=False, plan_guard=False),
        defaults=LookaheadDefaults(mode="lr", depth=2, max_tokens=32, max_step_tokens=16),
        server=ServerConfig(orchestrator=front, ingress=front, http_port=free_port(), grpc_port=free_port()))


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster(dict(NODES))
    try:
        yield c.start()
    finally:
        left = c.stop()
        assert not left, f"processes of the cluster still running: {[str(p) for p in left]}"


def test_roles_on_their_nodes_and_requests_cross_them(cluster, tmp_path):
    cfg = multinode_config()
    path = tmp_path / "multinode.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    base = f"http://127.0.0.1:{cfg.server.http_port}"
    log = tmp_path / "serve.log"  # a file, not a pipe: the replicas' logs stream to this driver
    with log.open("w") as out:
        serve = subprocess.Popen([sys.executable, "-m", "deployments.cli.main", "serve", "--address", cluster.gcs,
                                  "--config", str(path), "--host", "127.0.0.1", "--grace-period", "5"], cwd=ROOT, env=cluster.env,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_answering(f"{base}/v1/models", serve, log.read_text, timeout=240)

        # Ray's state API: each engine role's replica on the node advertising its resource
        node_of = {n["node_id"]: role for n in cluster.state("nodes") if n["state"] == "ALIVE"
                   for role, res in NODES.items() if set(res) <= set(n["resources_total"])}
        assert len(node_of) == 3, node_of
        placed = {a["class_name"].rsplit(":", 1)[-1]: node_of.get(a["node_id"])
                  for a in cluster.state("actors") if a["state"] == "ALIVE" and "ServeReplica" in a["class_name"]}
        # (three distinct nodes: node_of gives each of the three nodes its own role)
        assert [placed.get(d) for d in ("TargetEngine", "DraftEngine", "JudgeEngine")] == \
            ["target", "draft", "judge"], placed

        with httpx.Client(base_url=base, timeout=240) as c:
            # greedy, same model: the draft node's steps equal the target node's, drafts accepted
            greedy = c.post("/v1/chat/completions", json={"model": "lookahead", "messages": QUESTION,
                                                           "temperature": 0})
            # sampled with other seeds, drafts differ from the target's step: the judge node rules
            judged = c.post("/v1/chat/completions", json={"model": "lookahead", "messages": QUESTION,
                                                           "temperature": 1.0, "lookahead": {"verifier": "llm-judge"}})
        assert greedy.status_code == 200, greedy.text
        stats = greedy.json()["usage"]["lookahead"]
        assert stats["mode"] == "lr" and stats["accepted_steps"] >= 1 and stats["cycles"] >= 1, stats
        assert not stats.get("degraded"), stats
        assert judged.status_code == 200, judged.text
        steps = judged.json()["lookahead"]["steps"]
        assert any(s.get("verifier") == "llm-judge" for s in steps), steps  # a verdict the judge gave
        assert not judged.json()["usage"]["lookahead"].get("degraded"), judged.json()["usage"]

        # Ctrl-C: `serve --address` deletes its application and leaves the cluster (not its own) running
        os.killpg(serve.pid, signal.SIGINT)
        assert serve.wait(timeout=120) == 0, log.read_text()[-3000:]  # nothing in flight: no grace to wait
        deadline = time.monotonic() + 60
        while replicas := [a["class_name"] for a in cluster.state("actors")
                           if a["state"] == "ALIVE" and a["class_name"].startswith("ServeReplica:lookahead:")]:
            assert time.monotonic() < deadline, f"replicas left after serve --address stopped: {replicas}"
            time.sleep(1)
        assert len([n for n in cluster.state("nodes") if n["state"] == "ALIVE"]) == 3
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=10)
