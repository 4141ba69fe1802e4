"""`lookahead generate --json`: exactly one JSON document on stdout for every engine, logs on stderr."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.cli
QUESTION = "What is 2 + 3? Answer in one short sentence."


def generate(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deployments.cli.main", "generate", QUESTION, "--json", *args],
                          capture_output=True, text=True, timeout=timeout)


def one_document(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)  # the whole of stdout parses: nothing printed before or after
    assert out.stdout.count("\n") == 1 and out.stdout.endswith("}\n"), out.stdout[:2000]
    assert {"text", "finish_reason", "steps", "stats"} <= set(doc)
    assert doc["text"] == "".join(s["text"] for s in doc["steps"])
    return doc


@pytest.mark.slow
def test_hf_engine_json_and_stop():
    common = ("--engine", "hf", "--target", "smollm2-135m", "--draft", "smollm2-135m", "--mode", "lr",
              "--max-tokens", "16")
    doc = one_document(generate(*common))
    assert doc["stats"]["tokens"] > 0 and doc["text"]
    stop = doc["text"][len(doc["text"]) // 2:][:3]
    cut = one_document(generate(*common, "--stop", stop, "--stop", "never-in-the-text"))
    assert cut["text"] == doc["text"][:doc["text"].index(stop)]  # greedy: the same answer, cut
    assert cut["finish_reason"] == "stop"


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_engine_json_logs_on_stderr():
    out = generate("--engine", "vllm", "--target", "smollm2-135m", "--mode", "ar", "--max-tokens", "12")
    doc = one_document(out)
    assert doc["stats"]["tokens"] > 0 and doc["stats"]["mode"] == "ar"
    assert "EngineCore" in out.stderr or "vllm" in out.stderr.lower()  # vLLM did log: to stderr


def test_demo_compares_with_a_plain_target():
    """The demo's ar is the target with no speculation at all: token speculation is an engine
    setting, so ar on the demo's own n-gram target would really be sd."""
    from deployments.cli.serve import demo_config, plain_config

    cfg = demo_config()
    plain = plain_config(cfg)
    assert cfg.target.engine.engine == cfg.draft.engine.engine == "vllm"
    assert cfg.target.engine.token_speculation == "ngram" and cfg.defaults.mode == "lr+sd"
    assert cfg.defaults.depth == "auto" and cfg.verifier.kind == "embedding"
    assert plain.target.engine.token_speculation == "none" and plain.draft is None
    assert plain.target.engine.model == cfg.target.engine.model and plain.defaults.mode == "ar"
