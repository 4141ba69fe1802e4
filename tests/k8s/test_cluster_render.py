"""Rendering for a real multi-node cluster (offline): an image every node can pull from a
registry, and a model volume that pods on several nodes can mount (`lookahead k8s render
--registry/--image/--storage-class/--model-cache --root DIR`)."""
from __future__ import annotations

import argparse
import io

import pytest
import yaml

from deployments.cli import k8s as k8s_cli
from deployments.kuberay import profiles, render
from deployments.profiles import PROFILES
from tests.support.k8s_docs import pod_templates

REGISTRY = "registry.example.com/team"
SINGLE_NODE_MODES = {"ReadWriteOnce", "ReadWriteOncePod"}


def rendered_docs(options: dict | None = None, only: list[str] | None = None) -> dict[str, list[dict]]:
    """k8s/ file name -> its objects, as `render` would write them with these options."""
    return {rel.removeprefix("k8s/"): [d for d in yaml.safe_load_all(text) if d]
            for rel, text in render.rendered_files(options, only).items() if rel.startswith("k8s/")}


def all_pod_templates(files: dict[str, list[dict]]) -> list[tuple[str, dict]]:
    """(where, pod template) of every RayService group and every Job."""
    out = []
    for fname, docs in files.items():
        for d in docs:
            if d["kind"] == "RayService":
                out += [(f"{fname}:{g}", t) for g, t in pod_templates(d)]
            elif d["kind"] == "Job":
                out.append((f"{fname}:job", d["spec"]["template"]))
    return out


def single_node_claims_shared(files: dict[str, list[dict]]) -> list[str]:
    """Claims whose access modes tie them to one node but that more than one pod template
    mounts (pods of two templates land on different nodes: a multi-attach failure)."""
    modes = {d["metadata"]["name"]: set(d["spec"]["accessModes"])
             for docs in files.values() for d in docs if d["kind"] == "PersistentVolumeClaim"}
    users: dict[str, list[str]] = {}
    for where, t in all_pod_templates(files):
        for v in t["spec"].get("volumes", []):
            if "persistentVolumeClaim" in v:
                users.setdefault(v["persistentVolumeClaim"]["claimName"], []).append(where)
    errors = []
    for claim, where in users.items():
        assert claim in modes, f"{claim} is mounted but not rendered"
        if modes[claim] <= SINGLE_NODE_MODES and len(where) > 1:
            errors.append(f"{claim} ({sorted(modes[claim])}) mounted by {where}")
    return errors


def images_of(template: dict) -> list[str]:
    spec = template["spec"]
    return [c["image"] for c in spec["containers"] + spec.get("initContainers", [])]


@pytest.mark.parametrize("options", [{}, {"model_cache": "shared"}, {"model_cache": "local"},
                                     {"storage_class": "nfs-client"}], ids=["default", "shared", "local", "class"])
def test_no_single_node_volume_is_mounted_by_two_pod_templates(options):
    files = rendered_docs(options)
    assert single_node_claims_shared(files) == []
    # and the check itself sees such a claim: the shared claim made ReadWriteOnce fails it
    if "pvc-models.yaml" in files:
        files["pvc-models.yaml"][0]["spec"]["accessModes"] = ["ReadWriteOnce"]
        assert single_node_claims_shared(files) != []


def test_shared_cache_for_every_profile_uses_one_rwx_claim_and_jobs():
    files = rendered_docs({"model_cache": "shared", "storage_class": "filestore-rwx"})
    (pvc,) = files["pvc-models.yaml"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["storageClassName"] == "filestore-rwx"
    for name, k in profiles.K8S_PROFILES.items():
        assert k.fill_manifest in files, name  # the CPU demo too gets its Job back
    kust = files["kustomization.yaml"][0]
    assert kust["resources"] == ["pvc-models.yaml", "model-fill-cpu.yaml", "rayservice-cpu.yaml"]
    for where, t in all_pod_templates(files):
        (vol,) = [v for v in t["spec"]["volumes"] if v["name"] == "models"]
        assert vol == {"name": "models", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}}, where


def test_local_cache_for_every_profile_renders_no_claim_and_no_job():
    files = rendered_docs({"model_cache": "local"})
    kinds = {d["kind"] for docs in files.values() for d in docs}
    assert "PersistentVolumeClaim" not in kinds and "Job" not in kinds
    for where, t in all_pod_templates(files):
        (vol,) = [v for v in t["spec"]["volumes"] if v["name"] == "models"]
        assert "emptyDir" in vol, where


def test_registry_reaches_every_pod_spec():
    """--registry: head, every worker group (and their init containers) and the model-fill Job
    name the registry's image, with the tag the profile pins; nothing local is left."""
    files = rendered_docs({"registry": REGISTRY + "/", "model_cache": "shared"})
    seen = {"head": 0, "worker": 0, "job": 0}
    for where, t in all_pod_templates(files):
        for image in images_of(t):
            assert image.startswith(REGISTRY + "/lookahead:"), (where, image)
        seen["job" if where.endswith(":job") else "head" if where.endswith(":head") else "worker"] += 1
    assert seen["head"] == len(profiles.K8S_PROFILES) and seen["job"] == len(profiles.K8S_PROFILES)
    assert seen["worker"] >= 2 * len(profiles.K8S_PROFILES)
    for name, k in profiles.K8S_PROFILES.items():
        (rs,) = [d for d in files[k.manifest] if d["kind"] == "RayService"]
        (head_image,) = images_of(pod_templates(rs)[0][1])
        assert head_image == f"{REGISTRY}/{k.image}", name  # same name and tag under the registry


def test_image_for_one_profile():
    image = "registry.example.com/team/lookahead@sha256:" + "1" * 64
    files = rendered_docs({"image": image}, only=["gpu-prod"])
    assert set(files) == {"rayservice-gpu-prod.yaml", "model-fill-gpu-prod.yaml", "pvc-models.yaml"}
    templates = all_pod_templates(files)
    assert len(templates) == 1 + 4 + 1  # head, four worker groups, the Job
    assert {i for _, t in templates for i in images_of(t)} == {image}
    with pytest.raises(ValueError, match="pinned"):
        rendered_docs({"image": "registry.example.com/team/lookahead:latest"}, only=["gpu-prod"])


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    k8s_cli.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["k8s", "render", *argv])
    return args.func(args)


def test_render_cli_writes_a_cluster_copy_and_leaves_the_committed_files(tmp_path, capsys):
    # customised files never overwrite the committed defaults: a directory is required
    assert run_cli("--registry", REGISTRY) == 2
    assert "--root" in capsys.readouterr().err
    # one image for all profiles would put the CPU image on GPU pods (or the reverse)
    assert run_cli("--image", f"{REGISTRY}/lookahead:1.0", "--root", str(tmp_path)) == 2
    assert "--profile" in capsys.readouterr().err
    assert not (tmp_path / "k8s").exists()
    assert run_cli("--registry", REGISTRY, "--storage-class", "efs-sc", "--root", str(tmp_path)) == 0
    text = (tmp_path / "k8s" / "rayservice-gpu-prod.yaml").read_text()
    assert f"image: {REGISTRY}/lookahead:" in text and "image: lookahead:" not in text
    assert yaml.safe_load((tmp_path / "k8s" / "pvc-models.yaml").read_text())["spec"]["storageClassName"] == "efs-sc"
    assert run_cli("--registry", REGISTRY, "--storage-class", "efs-sc", "--root", str(tmp_path), "--check") == 0
    assert render.render(check=True, out=io.StringIO()) == 0  # the repository's k8s/ is untouched


def test_manifest_command_prints_what_applies_alone(tmp_path):
    """`lookahead k8s manifest` for any config: with the shared cache, the claim its pods mount
    and the Job that fills it come with the RayService; with a local cache, neither."""
    cfg_file = tmp_path / "mine.yaml"
    cfg_file.write_text(yaml.safe_dump(PROFILES["gpu-dev"].model_dump(mode="json")))
    parser = argparse.ArgumentParser()
    k8s_cli.add_cli(parser.add_subparsers(dest="command"))

    def manifest(*argv: str) -> dict[str, list[dict]]:
        out = tmp_path / "out.yaml"
        args = parser.parse_args(["k8s", "manifest", str(cfg_file), "--image", f"{REGISTRY}/lookahead:1.0",
                                  "-o", str(out), *argv])
        assert args.func(args) == 0
        return {"out.yaml": [d for d in yaml.safe_load_all(out.read_text()) if d]}

    files = manifest("--storage-class", "nfs-client")
    assert [d["kind"] for d in files["out.yaml"]] == ["PersistentVolumeClaim", "Job", "RayService", "Service"]
    assert files["out.yaml"][0]["spec"]["storageClassName"] == "nfs-client"
    assert single_node_claims_shared(files) == []
    assert {i for _, t in all_pod_templates(files) for i in images_of(t)} == {f"{REGISTRY}/lookahead:1.0"}
    files = manifest("--model-cache", "local")
    assert [d["kind"] for d in files["out.yaml"]] == ["RayService", "Service"]
