"""The model-fill Job and the engine pods' wait for it, as rendered into k8s/ (offline).

The Job's pod template is validated against the core/v1 PodTemplateSpec schema that the
KubeRay v1.7.0 CRDs embed (the same schema the RayService pods are checked against), plus the
stricter unknown-field walk; the Job object around it against a strict batch/v1 subset.
"""
from __future__ import annotations

import jsonschema
import pytest
import yaml

from deployments.cli.main import build_parser
from deployments.kuberay import manifests as kuberay
from deployments.kuberay import model_job, profiles
from deployments.profiles import PROFILES
from verifier import kinds
from tests.support.k8s_docs import (
    RAYCLUSTER_SCHEMA,
    ROOT,
    _META,
    load_docs,
    manifest_docs,
    pod_templates,
    the_rayservice,
    unknown_fields,
)

POD_TEMPLATE_SCHEMA = RAYCLUSTER_SCHEMA["properties"]["spec"]["properties"]["headGroupSpec"]["properties"]["template"]
JOB_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
              "properties": {
                  "apiVersion": {"const": "batch/v1"}, "kind": {"const": "Job"}, "metadata": _META,
                  "spec": {"type": "object", "additionalProperties": False, "required": ["template"], "properties": {
                      "backoffLimit": {"type": "integer", "minimum": 0},
                      "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                      "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                      "template": {"type": "object"}}}}}
# the profiles with a shared cache, which a Job fills (the CPU demo's pods fill their own)
FILL_JOBS = {name: k.fill_manifest for name, k in profiles.K8S_PROFILES.items() if k.cache.mode == "shared"}


def the_job(profile: str) -> dict:
    (job,) = load_docs(ROOT / "k8s" / FILL_JOBS[profile])
    return job


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


@pytest.mark.parametrize("profile", sorted(FILL_JOBS))
def test_job_validates(profile):
    job = the_job(profile)
    jsonschema.Draft7Validator(JOB_SCHEMA).validate(job)
    template = job["spec"]["template"]
    jsonschema.Draft7Validator(POD_TEMPLATE_SCHEMA).validate(template)
    assert unknown_fields(template, POD_TEMPLATE_SCHEMA) == []
    # a Job's pods must not restart in place (Kubernetes rejects Always for Jobs)
    assert template["spec"]["restartPolicy"] in ("Never", "OnFailure")


def test_pod_schema_check_catches_a_misspelling():
    template = the_job("gpu-dev")["spec"]["template"]
    template["spec"]["containers"][0]["volumeMount"] = template["spec"]["containers"][0].pop("volumeMounts")
    assert unknown_fields(template, POD_TEMPLATE_SCHEMA) == [".spec.containers[0].volumeMount"]


@pytest.mark.parametrize("profile", sorted(FILL_JOBS))
def test_job_fills_what_the_rayservice_loads(profile):
    """Every model some replica loads at start is in the Job's command, and the Job writes
    to the same claim, with the same image, as the RayService pods read."""
    cfg = PROFILES[profile]
    job = the_job(profile)
    (c,) = job["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(c["command"][1:])  # the real CLI accepts the command
    assert args.models_command == "fill"
    loaded = {m for ms in kuberay.role_models(cfg).values() for m in ms}
    assert loaded <= set(args.models)
    assert cfg.verifier.embedding_model in args.models  # a request may pick the embedding verifier
    rs = the_rayservice(manifest_docs(profile))
    (image,) = {c2["image"] for _, t in pod_templates(rs) for c2 in t["spec"]["containers"]}
    assert c["image"] == image == profiles.K8S_PROFILES[profile].image
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    (pvc,) = load_docs(ROOT / "k8s" / profiles.K8S_PROFILES[profile].pvc_manifest)
    assert volumes[mounts["/models"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert "emptyDir" in volumes[mounts[args.scratch]]


@pytest.mark.parametrize("profile", sorted(FILL_JOBS))
def test_job_downloads_and_serving_pods_do_not(profile):
    (c,) = the_job(profile)["spec"]["template"]["spec"]["containers"]
    env = env_of(c)
    assert env["HF_HUB_OFFLINE"]["value"] == "0"
    assert env["LOOKAHEAD_HOME"]["value"] == "/models" and env["HF_HOME"]["value"] == "/models/huggingface"
    # mirrors and the token are the user's, optional, and read at run time (the file stays generic)
    for var, key in [(v, k) for k, v in model_job.SOURCE_KEYS.items()]:
        ref = env[var]["valueFrom"]["configMapKeyRef"]
        assert ref == {"name": model_job.SOURCE_CONFIGMAP, "key": key, "optional": True}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    rs = the_rayservice(manifest_docs(profile))
    for name, t in pod_templates(rs):
        for c2 in t["spec"]["containers"] + t["spec"].get("initContainers", []):
            assert env_of(c2)["HF_HUB_OFFLINE"]["value"] == "1", name  # shared cache: only the Job fetches


@pytest.mark.parametrize("profile", sorted(FILL_JOBS))
def test_job_pod_is_non_root_and_bounded(profile):
    spec = the_job(profile)["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == kuberay.RUN_AS_USER
    assert spec["securityContext"]["fsGroup"] == kuberay.RUN_AS_GROUP  # so the volume is writable
    (c,) = spec["containers"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])


@pytest.mark.parametrize("profile", sorted(profiles.K8S_PROFILES))
def test_model_loading_pods_wait_for_their_models(profile):
    """Each worker group's pods wait for (shared cache) or fill (local cache) exactly the models its
    roles load, plus, when local, what any verifier kind of the orchestrator may load; the head
    and groups that load nothing start at once."""
    cfg = PROFILES[profile]
    k = profiles.K8S_PROFILES[profile]
    rs = the_rayservice(manifest_docs(profile))
    per_role = kuberay.role_models(cfg)
    layouts = {lay.plan.name: lay for lay in kuberay.group_layouts(cfg, k.sizing)}
    for name, t in pod_templates(rs):
        inits = t["spec"].get("initContainers", [])
        want = [] if name == "head" else [m for r in layouts[name].roles for m in per_role[r]]
        if k.cache.mode == "local" and name != "head" and "orchestrator" in layouts[name].roles:
            want += kinds.any_kind_models(cfg.verifier)
        want = list(dict.fromkeys(want))
        if not want:
            assert inits == [], name
            continue
        (init,) = inits
        args = build_parser().parse_args(init["command"][1:])
        verb = "wait" if k.cache.mode == "shared" else "fill"
        assert (args.models_command, args.models) == (verb, want), name
        assert init["image"] == t["spec"]["containers"][0]["image"]
        mounts = {m["mountPath"] for m in init["volumeMounts"]}
        assert mounts == ({"/models"} if verb == "wait" else {"/models", args.scratch})
        assert env_of(init)["LOOKAHEAD_HOME"]["value"] == "/models"
        # only a fill may reach a hub or an index; the serving container never does
        assert env_of(init)["HF_HUB_OFFLINE"]["value"] == ("1" if verb == "wait" else "0")
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(init["resources"][kind])
    # the CPU demo (embedding verifier in the orchestrator): target, draft and frontend groups all fill
    if profile == "cpu-demo":
        filling = {n for n, t in pod_templates(rs) if t["spec"].get("initContainers")}
        assert filling == {"target", "draft", "frontend"}


def frontend_of(verifier: str) -> dict:
    cfg = PROFILES["cpu-demo"].model_copy(deep=True)
    cfg.verifier.kind = verifier
    rs = kuberay.rayservice(cfg, "x", image="lookahead:0.1.0-cpu", sizing=profiles.K8S_PROFILES["cpu-demo"].sizing)
    (frontend,) = [t for n, t in pod_templates(rs) if n == "frontend"]
    return frontend


def test_embedding_verifier_makes_the_orchestrator_wait():
    cfg = PROFILES["cpu-demo"]
    init = frontend_of("embedding")["spec"]["initContainers"][0]
    assert init["command"][-1] == cfg.verifier.embedding_model


def test_exact_verifier_frontend_starts_at_once():
    assert frontend_of("exact")["spec"].get("initContainers", []) == []  # shared cache: nothing to wait for


def test_local_cache_frontend_fills_every_kinds_model():
    """With a local cache no Job fills what another verifier kind loads, so the orchestrator's
    pods fill it themselves: a request may pick the embedding verifier when the default is exact."""
    cfg = PROFILES["cpu-demo"].model_copy(deep=True)
    cfg.verifier.kind = "exact"
    rs = kuberay.rayservice(cfg, "x", image="lookahead:0.1.0-cpu", sizing=profiles.K8S_PROFILES["cpu-demo"].sizing,
                            cache=kuberay.ModelCache(mode="local"))
    (frontend,) = [t for n, t in pod_templates(rs) if n == "frontend"]
    (init,) = frontend["spec"]["initContainers"]
    assert init["command"][:3] == ["lookahead", "models", "fill"]
    assert cfg.verifier.embedding_model in init["command"]


def test_local_model_paths_are_waited_for_but_not_filled():
    cfg = PROFILES["cpu-demo"].model_copy(deep=True)
    cfg.draft.engine.model = "/models/my-draft"
    assert "/models/my-draft" not in model_job.models_to_fill(cfg)
    assert "/models/my-draft" in kuberay.role_models(cfg)["draft"]


def test_kustomization_applies_the_cpu_demo_in_one_go():
    kust = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    assert kust["resources"] == ["rayservice-cpu.yaml"]  # its pods fill their own caches: no claim, no Job


def test_a_local_cache_has_no_job():
    with pytest.raises(ValueError, match="local cache"):
        model_job.model_fill_job(PROFILES["cpu-demo"], "cpu-demo", image="lookahead:0.1.0-cpu",
                                 resources=kuberay.FILL_RESOURCES, cache=kuberay.ModelCache(mode="local"))
