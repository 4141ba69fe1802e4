"""Offline checks of the generated Serve configs and KubeRay manifests (no cluster needed).

* every RayService (and its RayCluster spec) validates against the KubeRay v1.7.0 CRD schemas,
  and a stricter walk over the same schemas rejects fields they do not define (the CRD
  schemas carry no additionalProperties: false, so jsonschema alone accepts typos);
* the embedded serveConfigV2 validates against Ray Serve's ServeDeploySchema;
* the committed files are what `render` produces from deployments/profiles.py (+ kuberay/profiles.py);
* properties: GPU requests == limits == what the Serve replicas need (target = tensor
  parallel size), worker-group bounds match Serve autoscaling, serve / serve-grpc ports,
  non-root pods, requests and limits everywhere, images pinned by tag, model PVC mounted.
"""
from __future__ import annotations

import importlib

import argparse
import copy
import io
import math

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments.cli import k8s as k8s_cli
from deployments.kuberay import manifests as kuberay
from deployments.kuberay import profiles, render
from deployments.profiles import PROFILES
from deployments.kuberay.__main__ import main as kuberay_main
from deployments.config import (
    AppConfig,
    AutoscalingConfig,
    EngineConfig,
    LookaheadDefaults,
    RoleConfig,
    RoleDeployment,
    ServerConfig,
    VerifierConfig,
)
from deployments.serve_config import (
    app_config_from_data,
    DEPLOYMENT_ROLES,
    INGRESS_SERVE_LIMITS,
    load_app_config,
    PROXY_TIMEOUT_MARGIN_S,
    role_deployment as read_deployment,
    serve_config,
    write_serve_yaml,
)
from tests.support.k8s_docs import (
    EPS,
    MANIFESTS,
    OBJECT_META_KEYS,
    PVC_SCHEMA,
    RAYCLUSTER_SCHEMA,
    RAYSERVICE_SCHEMA,
    ROOT,
    SERVICE_SCHEMA,
    load_docs,
    manifest_docs,
    pod_templates,
    the_rayservice,
    unknown_fields,
)

# --------------------------------------------------------------------------- helpers


def manifest_unknown_fields(rs: dict) -> list[str]:
    errors = unknown_fields(rs, RAYSERVICE_SCHEMA)
    errors += [f".metadata.{k}" for k in rs.get("metadata", {}) if k not in OBJECT_META_KEYS]
    return errors


def serve_cfg_of(rs: dict) -> dict:
    return yaml.safe_load(rs["spec"]["serveConfigV2"])


def group_slots(group: dict) -> dict[str, float]:
    return kuberay.custom_resources(group)


def deployments_by_resource(serve_cfg: dict) -> dict[str, dict]:
    """custom resource name -> Serve deployment dict (from the manifest alone)."""
    out = {}
    for dep in serve_cfg["applications"][0]["deployments"]:
        res = dep["ray_actor_options"].get("resources") or {}
        assert len(res) == 1, f"{dep['name']}: expected exactly one role resource, got {res}"
        out[next(iter(res))] = dep
    return out


def gpu_count(container: dict, kind: str) -> float:
    return float(container["resources"].get(kind, {}).get(kuberay.GPU_RESOURCE, 0))


def gpu_consistency_errors(rs: dict) -> list[str]:
    """GPU requests == limits on every container; each worker group's GPUs are exactly what
    its replicas need; a single-role group's pod GPUs equal the role's num_gpus; the target's
    num_gpus equals its tensor parallel size."""
    errors = []
    serve_cfg = serve_cfg_of(rs)
    app_cfg = serve_cfg["applications"][0]["args"]["config"]
    by_res = deployments_by_resource(serve_cfg)
    tp = app_cfg["target"]["engine"]["engine_kwargs"].get("tensor_parallel_size")
    target_dep = next(d for d in by_res.values() if d["name"] == "TargetEngine")
    if tp is not None and target_dep["ray_actor_options"]["num_gpus"] != tp:
        errors.append(f"TargetEngine num_gpus {target_dep['ray_actor_options']['num_gpus']} != tensor_parallel_size {tp}")
    for group_name, template in pod_templates(rs):
        for c in template["spec"]["containers"]:
            req, lim = gpu_count(c, "requests"), gpu_count(c, "limits")
            if req != lim:
                errors.append(f"{group_name}/{c['name']}: GPU request {req} != limit {lim}")
    rc = rs["spec"]["rayClusterConfig"]
    if any(gpu_count(c, "limits") for c in rc["headGroupSpec"]["template"]["spec"]["containers"]):
        errors.append("head pod requests GPUs")
    for g in rc.get("workerGroupSpecs", []):
        slots = group_slots(g)
        need = sum(n * by_res[r]["ray_actor_options"]["num_gpus"] for r, n in slots.items() if r in by_res)
        have = gpu_count(g["template"]["spec"]["containers"][0], "limits")
        if have + EPS < need:
            errors.append(f"group {g['groupName']}: pods have {have} GPUs, replicas need {need}")
        if have != math.ceil(need - EPS):
            errors.append(f"group {g['groupName']}: pods have {have} GPUs, expected ceil({need})")
        if len(slots) == 1:
            (r, n), = slots.items()
            g_r = by_res[r]["ray_actor_options"]["num_gpus"]
            if n == 1 and g_r >= 1 and have != g_r:
                errors.append(f"group {g['groupName']}: pods have {have} GPUs, {by_res[r]['name']} num_gpus {g_r}")
            if by_res[r]["name"] == "TargetEngine" and tp is not None and have != tp * n:
                errors.append(f"group {g['groupName']}: {have} GPUs per pod, tensor parallel {tp}")
    return errors


def autoscaling_errors(rs: dict) -> list[str]:
    """Each Serve deployment's role resource is advertised by exactly one worker group, whose
    minReplicas/maxReplicas are max over its roles of ceil(serve_min / slots) and
    ceil(serve_max / slots): it can host min..max replicas of every role it holds."""
    errors = []
    by_res = deployments_by_resource(serve_cfg_of(rs))
    groups = rs["spec"]["rayClusterConfig"].get("workerGroupSpecs", [])
    for res, dep in by_res.items():
        hosts = [g for g in groups if res in group_slots(g)]
        if len(hosts) != 1:
            errors.append(f"{dep['name']}: resource {res} advertised by {len(hosts)} groups")
    for g in groups:
        slots = group_slots(g)
        lo = hi = 0
        for res, n in slots.items():
            if res not in by_res:
                errors.append(f"group {g['groupName']}: advertises {res} that no deployment uses")
                continue
            a = by_res[res]["autoscaling_config"]
            lo = max(lo, math.ceil(a["min_replicas"] / n))
            hi = max(hi, math.ceil(a["max_replicas"] / n))
            if g["maxReplicas"] * n < a["max_replicas"]:
                errors.append(f"group {g['groupName']}: {g['maxReplicas']} pods x {n} < {a['max_replicas']} replicas")
            if g["minReplicas"] * n < a["min_replicas"]:
                errors.append(f"group {g['groupName']}: {g['minReplicas']} pods x {n} < {a['min_replicas']} replicas")
        if (g["minReplicas"], g["maxReplicas"]) != (lo, max(hi, lo)):
            errors.append(f"group {g['groupName']}: bounds {g['minReplicas']}..{g['maxReplicas']}, expected {lo}..{hi}")
        if not g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"]:
            errors.append(f"group {g['groupName']}: replicas outside min..max")
        ray_cpus = float(g["resources"]["CPU"])
        need_cpus = sum(n * by_res[r]["ray_actor_options"]["num_cpus"] for r, n in slots.items() if r in by_res)
        limit = kuberay.cpu_quantity(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
        if not need_cpus - EPS <= ray_cpus <= limit + EPS:
            errors.append(f"group {g['groupName']}: num-cpus {ray_cpus} vs need {need_cpus} / limit {limit}")
    return errors


def ray_node_types(rs: dict) -> dict[str, dict]:
    """The node types Ray's own KubeRay autoscaler derives from this RayService's cluster spec
    (it parses the groups' resources, container limits and GPUs exactly as it will in the cluster)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
          "metadata": {"name": rs["metadata"]["name"], "namespace": "default"},
          "spec": copy.deepcopy(rs["spec"]["rayClusterConfig"])}
    return _derive_autoscaling_config_from_ray_cr(cr)["available_node_types"]


def packing_errors(rs: dict) -> list[str]:
    """Pack every Serve replica's resource bundle into the autoscaler's node types: each
    deployment fits exactly one node type, its min replicas fit in min_workers pods and its max
    replicas in max_workers pods (first fit, all roles of a group together)."""
    errors = []
    types = ray_node_types(rs)
    deps = serve_cfg_of(rs)["applications"][0]["deployments"]
    home: dict[str, str] = {}
    bundles: dict[str, dict] = {}
    for d in deps:
        o = d["ray_actor_options"]
        b = {"CPU": o.get("num_cpus", 1), "GPU": o.get("num_gpus", 0), **(o.get("resources") or {})}
        bundles[d["name"]] = {k: v for k, v in b.items() if v}
        fits = [t for t, spec in types.items()
                if all(spec["resources"].get(k, 0) + EPS >= v for k, v in bundles[d["name"]].items())]
        if len(fits) != 1:
            errors.append(f"{d['name']}: fits node types {fits}")
        else:
            home[d["name"]] = fits[0]
    for bound in ("min", "max"):
        for t, spec in types.items():
            pods = [dict(spec["resources"]) for _ in range(spec[f"{bound}_workers"])]
            for d in deps:
                if home.get(d["name"]) != t:
                    continue
                for i in range(d["autoscaling_config"][f"{bound}_replicas"]):
                    pod = next((p for p in pods if all(p.get(k, 0) + EPS >= v for k, v in bundles[d["name"]].items())), None)
                    if pod is None:
                        errors.append(f"{bound}: {d['name']} replica {i + 1} does not fit in {len(pods)} {t} pods")
                        break
                    for k, v in bundles[d["name"]].items():
                        pod[k] -= v
    return errors


def all_checks(rs: dict) -> list[str]:
    errors = [f"schema: {e.message}" for e in jsonschema.Draft7Validator(RAYSERVICE_SCHEMA).iter_errors(rs)]
    errors += manifest_unknown_fields(rs)
    errors += gpu_consistency_errors(rs)
    errors += autoscaling_errors(rs)
    errors += packing_errors(rs)
    return errors


# --------------------------------------------------------------------------- generated files


def test_render_check_is_clean_on_committed_tree():
    out = io.StringIO()
    assert render.render(check=True, out=out) == 0, out.getvalue()


def test_render_check_detects_stale_and_missing(tmp_path):
    assert render.render(tmp_path, out=io.StringIO()) == 0
    assert render.render(tmp_path, check=True, out=io.StringIO()) == 0
    gpu_prod = tmp_path / "k8s" / "rayservice-gpu-prod.yaml"
    gpu_prod.write_text(gpu_prod.read_text().replace("nvidia.com/gpu: 4", "nvidia.com/gpu: 2"))
    (tmp_path / "deployments" / "configs" / "cpu-demo.yaml").unlink()
    out = io.StringIO()
    assert render.render(tmp_path, check=True, out=out) == 1
    assert "k8s/rayservice-gpu-prod.yaml" in out.getvalue()
    assert "deployments/configs/cpu-demo.yaml" in out.getvalue()
    assert "k8s/rayservice-cpu.yaml" not in out.getvalue()
    # the module entry point and the `lookahead k8s` sub-command agree
    assert kuberay_main(["render", "--check", "--root", str(tmp_path)]) == 1
    assert kuberay_main(["render", "--root", str(tmp_path)]) == 0
    parser = argparse.ArgumentParser()
    k8s_cli.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["k8s", "render", "--check", "--root", str(tmp_path)])
    assert args.func(args) == 0


def test_rendered_file_set():
    files = set(render.rendered_files())
    assert {"k8s/rayservice-cpu.yaml", "k8s/rayservice-gpu-dev.yaml", "k8s/rayservice-gpu-prod.yaml",
            "k8s/pvc-models.yaml", "k8s/kustomization.yaml", "deployments/configs/cpu-demo.yaml",
            "deployments/configs/gpu-dev.yaml", "deployments/configs/gpu-prod.yaml"} <= files
    kust = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (ROOT / "k8s" / res).is_file()


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("profile", sorted(MANIFESTS))
def test_rayservice_validates_against_kuberay_schema(profile):
    docs = manifest_docs(profile)
    rs = the_rayservice(docs)
    jsonschema.Draft7Validator(RAYSERVICE_SCHEMA).validate(rs)
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": rs["metadata"]["name"]},
               "spec": rs["spec"]["rayClusterConfig"]}
    jsonschema.Draft7Validator(RAYCLUSTER_SCHEMA).validate(cluster)
    assert rs["apiVersion"] == "ray.io/v1"
    rc = rs["spec"]["rayClusterConfig"]
    assert rc["rayVersion"] == kuberay.RAY_VERSION == "2.60.0"
    assert rc["enableInTreeAutoscaling"] is True
    assert rc["headGroupSpec"]["rayStartParams"] == {"dashboard-host": "0.0.0.0"}
    assert rc["headGroupSpec"]["resources"] == {"CPU": "0"}  # only the Serve controller and a proxy there
    assert isinstance(rs["spec"]["serveConfigV2"], str)
    for doc in docs:
        if doc["kind"] == "Service":
            jsonschema.Draft7Validator(SERVICE_SCHEMA).validate(doc)


@pytest.mark.parametrize("profile", sorted(MANIFESTS))
def test_rayservice_has_no_unknown_fields(profile):
    assert manifest_unknown_fields(the_rayservice(manifest_docs(profile))) == []


def test_unknown_field_checker_rejects_misspellings():
    rs = the_rayservice(manifest_docs("gpu-prod"))
    bad = copy.deepcopy(rs)
    rc = bad["spec"]["rayClusterConfig"]
    rc["workerGroupSpec"] = rc.pop("workerGroupSpecs")
    # plain jsonschema accepts it: the CRD schemas do not forbid unknown keys ...
    jsonschema.Draft7Validator(RAYSERVICE_SCHEMA).validate(bad)
    # ... the walker does not
    assert manifest_unknown_fields(bad) == [".spec.rayClusterConfig.workerGroupSpec"]
    # it reaches into the embedded PodSpec too
    bad = copy.deepcopy(rs)
    container = bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    bad["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["securityContext"]["runAsNonroot"] = True
    bad["metadata"]["lables"] = {}
    assert sorted(manifest_unknown_fields(bad)) == sorted([
        ".spec.rayClusterConfig.workerGroupSpecs[0].template.spec.containers[0].resource",
        ".spec.rayClusterConfig.headGroupSpec.template.spec.securityContext.runAsNonroot",
        ".metadata.lables",
    ])
    # free-form maps (labels, rayStartParams) accept any key
    ok = copy.deepcopy(rs)
    ok["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["object-store-memory"] = "1000000000"
    assert manifest_unknown_fields(ok) == []


def _serve_schema_models():
    from ray.serve.config import AutoscalingConfig as ServeAutoscaling
    from ray.serve.schema import (
        DeploymentSchema,
        gRPCOptionsSchema,
        HTTPOptionsSchema,
        RayActorOptionsSchema,
        ServeApplicationSchema,
        ServeDeploySchema,
    )
    return ServeDeploySchema, {
        "http_options": HTTPOptionsSchema, "grpc_options": gRPCOptionsSchema,
        "applications": ServeApplicationSchema, "deployments": DeploymentSchema,
        "ray_actor_options": RayActorOptionsSchema, "autoscaling_config": ServeAutoscaling,
    }


def serve_unknown_fields(data: dict, model=None, path: str = "") -> list[str]:
    """Keys Ray Serve's schema models do not define (they tolerate extras silently)."""
    root, nested = _serve_schema_models()
    model = model or root
    errors = []
    for key, value in data.items():
        if key not in model.model_fields:
            errors.append(f"{path}.{key}")
        elif key in nested and key != "args":
            sub = nested[key]
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    errors += serve_unknown_fields(item, sub, f"{path}.{key}")
    return errors


def check_serve_config(data: dict, cfg: AppConfig, *, role_resources: bool) -> None:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(data)
    assert serve_unknown_fields(data) == []
    # the proxies time out only after every deadline the application keeps: its 504 comes first
    proxy_timeout = cfg.server.request_timeout_s + PROXY_TIMEOUT_MARGIN_S
    assert data["http_options"] == {"host": "0.0.0.0", "port": cfg.server.http_port, "request_timeout_s": proxy_timeout}
    assert data["grpc_options"] == {
        "port": cfg.server.grpc_port, "request_timeout_s": proxy_timeout,
        "grpc_servicer_functions": ["protos.lookahead.v1.lookahead_pb2_grpc.add_LookaheadServiceServicer_to_server",
                                    "protos.grpc.health.v1.health_pb2_grpc.add_HealthServicer_to_server"]}
    for path in data["grpc_options"]["grpc_servicer_functions"]:  # what Serve's gRPC proxy imports
        module, name = path.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), name)), path
    (app,) = data["applications"]
    assert app["import_path"] == "deployments.app:build_app_from_args"
    # one copy of placement and scaling: the deployments list, not the args
    args = app["args"]["config"]
    assert all("deployment" not in (args.get(role) or {}) for role in ("target", "draft", "judge"))
    assert not {"orchestrator", "ingress"} & set(args["server"])
    assert app_config_from_data(data) == cfg
    names = [d["name"] for d in app["deployments"]]
    expected = ["TargetEngine"] + (["DraftEngine"] if cfg.draft else []) + (["JudgeEngine"] if cfg.judge else [])
    assert names == expected + ["Orchestrator", "Ingress"]
    roles = {"target": cfg.target.deployment, "orchestrator": cfg.server.orchestrator, "ingress": cfg.server.ingress,
             "draft": cfg.draft.deployment if cfg.draft else None, "judge": cfg.judge.deployment if cfg.judge else None}
    for d in app["deployments"]:
        role = DEPLOYMENT_ROLES[d["name"]]
        rd = roles[role]
        assert d["ray_actor_options"]["num_gpus"] == rd.num_gpus
        assert d["ray_actor_options"]["num_cpus"] == rd.num_cpus
        if role == "ingress":  # Serve never refuses for it: it counts its requests itself, against these
            assert {k: d[k] for k in ("max_ongoing_requests", "max_queued_requests")} == INGRESS_SERVE_LIMITS
            assert d["user_config"] == {"max_ongoing_requests": rd.max_ongoing_requests,
                                        "max_queued_requests": rd.max_queued_requests}
        else:
            assert d["max_ongoing_requests"] == rd.max_ongoing_requests
            assert d["max_queued_requests"] == rd.max_queued_requests
            assert "user_config" not in d
        assert d["autoscaling_config"] == {"min_replicas": rd.autoscaling.min_replicas,
                                           "max_replicas": rd.autoscaling.max_replicas,
                                           "target_ongoing_requests": rd.autoscaling.target_ongoing_requests}
        if role_resources:
            assert d["ray_actor_options"]["resources"] == {f"lookahead_{role}": 1}
        else:
            assert "resources" not in d["ray_actor_options"]


@pytest.mark.parametrize("profile", sorted(MANIFESTS))
def test_embedded_serve_config_validates(profile):
    rs = the_rayservice(manifest_docs(profile))
    check_serve_config(serve_cfg_of(rs), PROFILES[profile], role_resources=True)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_serve_config_files_validate(profile):
    path = ROOT / "deployments" / "configs" / f"{profile}.yaml"
    cfg = PROFILES[profile]
    check_serve_config(yaml.safe_load(path.read_text()), cfg, role_resources=False)
    assert load_app_config(path) == cfg


def test_profiles_match_the_brief():
    cpu = PROFILES["cpu-demo"]
    assert (cpu.target.engine.model, cpu.draft.engine.model) == ("qwen2.5-0.5b", "smollm2-135m")
    assert {cpu.target.engine.engine, cpu.draft.engine.engine} == {"hf"} and cpu.verifier.kind == "embedding"
    assert cpu.judge is None
    serve = yaml.safe_load((ROOT / "deployments/configs/cpu-demo.yaml").read_text())
    assert all(d["ray_actor_options"]["num_gpus"] == 0 for d in serve["applications"][0]["deployments"])
    dev = PROFILES["gpu-dev"]
    assert sum(r.deployment.num_gpus for r in (dev.target, dev.draft, dev.judge)) <= 1
    assert all(0 < r.deployment.num_gpus < 1 and r.engine.engine == "vllm" for r in (dev.target, dev.draft, dev.judge))
    prod = PROFILES["gpu-prod"]
    assert prod.target.engine.engine_kwargs["tensor_parallel_size"] == prod.target.deployment.num_gpus == 4
    assert prod.draft.deployment.num_gpus == prod.judge.deployment.num_gpus == 1
    assert prod.verifier.kind == "llm-judge"
    for rd in (prod.target.deployment, prod.draft.deployment, prod.judge.deployment,
               prod.server.orchestrator, prod.server.ingress):
        assert rd.autoscaling.max_replicas > 1


def test_cpu_split_gives_each_role_its_own_cores_and_every_profile_the_policy():
    split = PROFILES["cpu-split"]
    target, draft = split.target.engine, split.draft.engine
    assert target.engine == draft.engine == "vllm" and target.cpu_cores and draft.cpu_cores
    assert not split.draft_shares_target_device()  # disjoint core sets
    assert split.defaults.schedule == "async"  # the draft writes beside the target
    assert "cpu-split" not in profiles.K8S_PROFILES  # one machine's cores; on Kubernetes each role has its pod
    assert {name: cfg.defaults.depth for name, cfg in PROFILES.items()} == dict.fromkeys(PROFILES, "auto")


def test_the_policy_is_told_which_profiles_put_the_draft_on_the_targets_device():
    shares = {name: cfg.draft_shares_target_device() for name, cfg in PROFILES.items()}
    # one machine's cores for both, or fractions of one GPU: shared; disjoint cores or whole GPUs each: own
    assert shares == {"cpu-demo": True, "cpu-vllm": True, "cpu-split": False, "gpu-dev": True, "gpu-prod": False}
    split = PROFILES["cpu-split"]
    overlap = split.model_copy(deep=True)
    overlap.draft.engine.cpu_cores = "0-1"  # "1" is in both
    assert overlap.draft_shares_target_device()
    from deployments.cli.serve import demo_config
    assert demo_config().draft_shares_target_device()  # one fake GPU per role, the same two cores
    said = PROFILES["cpu-vllm"].model_copy(deep=True)
    said.server.shared_devices = False  # the operator knows better than the placement (other nodes)
    assert not said.draft_shares_target_device()


def test_load_app_config_accepts_every_format(tmp_path):
    cfg = PROFILES["gpu-dev"]
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    serve = write_serve_yaml(cfg, tmp_path / "serve.yaml", header="hello")
    assert serve.read_text().startswith("# hello\n")
    rs = tmp_path / "rs.yaml"
    rs.write_text(yaml.safe_dump(kuberay.rayservice(cfg, "x", image="example.com/img:1.0")))
    assert load_app_config(plain) == load_app_config(serve) == load_app_config(rs) == cfg
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"applications": [{"name": "a", "import_path": "x:y"}]}))
    with pytest.raises(ValueError):
        load_app_config(bad)


def test_serve_config_roles_follow_the_config():
    small = AppConfig(target=RoleConfig(engine=EngineConfig(model="m")), defaults=LookaheadDefaults(mode="ar"))
    names = [d["name"] for d in serve_config(small)["applications"][0]["deployments"]]
    assert names == ["TargetEngine", "Orchestrator", "Ingress"]
    d = serve_config(small, app_name="x", route_prefix="/la")["applications"][0]
    assert (d["name"], d["route_prefix"]) == ("x", "/la")


def test_role_resources_reach_the_replicas_and_read_back():
    """RoleDeployment.resources pins a role to the nodes advertising them (tests/serve/test_multinode.py
    runs it on three raylets): each replica asks for them, beside the role's own Kubernetes resource,
    and a Serve config reads back to the same AppConfig."""
    target = RoleConfig(engine=EngineConfig(model="m"), deployment=RoleDeployment(resources={"node_target": 1}))
    cfg = AppConfig(target=target, defaults=LookaheadDefaults(mode="ar"))
    plain, k8s = (serve_config(cfg, role_resources=on)["applications"][0]["deployments"][0] for on in (False, True))
    assert plain["ray_actor_options"]["resources"] == {"node_target": 1}
    assert k8s["ray_actor_options"]["resources"] == {"node_target": 1, "lookahead_target": 1}
    assert read_deployment(k8s) == read_deployment(plain) == target.deployment
    assert app_config_from_data(serve_config(cfg, role_resources=True)) == cfg
    for bad in ({"node_target": -1}, {"node_target": 0}, {"GPU": 1}):
        with pytest.raises(ValueError):
            RoleDeployment(resources=bad)
    # KubeRay's worker groups advertise only lookahead_<role>: such a role could never be placed there
    with pytest.raises(ValueError, match="deployment.resources"):
        kuberay.rayservice(cfg, "x", image="example.com/lookahead:1.0")


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("profile", sorted(MANIFESTS))
def test_gpu_requests_match_roles(profile):
    rs = the_rayservice(manifest_docs(profile))
    assert gpu_consistency_errors(rs) == []
    groups = {g["groupName"]: g for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    cfg = PROFILES[profile]
    if profile == "gpu-prod":
        target = groups["target"]["template"]["spec"]["containers"][0]["resources"]
        assert target["requests"]["nvidia.com/gpu"] == target["limits"]["nvidia.com/gpu"] == 4
        assert cfg.target.engine.engine_kwargs["tensor_parallel_size"] == 4
        for role in ("draft", "judge"):
            assert groups[role]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    if profile == "gpu-dev":
        assert groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    if profile == "cpu-demo":
        for _, t in pod_templates(rs):
            for c in t["spec"]["containers"]:
                assert "nvidia.com/gpu" not in c["resources"]["requests"]
                assert "nvidia.com/gpu" not in c["resources"]["limits"]


def test_gpu_consistency_check_fails_on_tampered_manifest():
    rs = the_rayservice(manifest_docs("gpu-prod"))
    target = next(g for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "target")

    bad = copy.deepcopy(rs)  # request != limit
    t = next(g for g in bad["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "target")
    t["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = 2
    assert any("request 2.0 != limit 4.0" in e for e in gpu_consistency_errors(bad))

    bad = copy.deepcopy(rs)  # both lowered: no longer the tensor parallel size
    t = next(g for g in bad["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "target")
    for kind in ("requests", "limits"):
        t["template"]["spec"]["containers"][0]["resources"][kind]["nvidia.com/gpu"] = 2
    errors = gpu_consistency_errors(bad)
    assert any("tensor parallel 4" in e for e in errors) and any("replicas need 4" in e for e in errors)

    bad = copy.deepcopy(rs)  # serve config no longer matches the TP size
    serve_cfg = serve_cfg_of(bad)
    serve_cfg["applications"][0]["deployments"][0]["ray_actor_options"]["num_gpus"] = 2
    bad["spec"]["serveConfigV2"] = yaml.safe_dump(serve_cfg)
    assert any("tensor_parallel_size" in e for e in gpu_consistency_errors(bad))
    assert target["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4


@pytest.mark.parametrize("profile", sorted(MANIFESTS))
def test_autoscaling_bounds_match_serve(profile):
    rs = the_rayservice(manifest_docs(profile))
    assert autoscaling_errors(rs) == []
    if profile == "gpu-prod":
        groups = {g["groupName"]: g for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
        assert {n: (g["minReplicas"], g["maxReplicas"]) for n, g in groups.items()} == {
            "target": (1, 4), "draft": (1, 4), "judge": (1, 2), "frontend": (1, 4)}


@pytest.mark.parametrize("profile", sorted(MANIFESTS))
def test_replicas_pack_into_ray_autoscaler_node_types(profile):
    rs = the_rayservice(manifest_docs(profile))
    assert packing_errors(rs) == []
    types = ray_node_types(rs)
    assert types["headgroup"]["resources"]["CPU"] == 0  # nothing but the controller/proxy on the head
    if profile == "gpu-prod":
        assert types["target"]["resources"]["GPU"] == 4 and types["target"]["resources"]["lookahead_target"] == 1
        assert (types["target"]["min_workers"], types["target"]["max_workers"]) == (1, 4)


def test_packing_check_fails_on_tampered_manifest():
    rs = the_rayservice(manifest_docs("gpu-prod"))
    bad = copy.deepcopy(rs)
    serve_cfg = serve_cfg_of(bad)
    serve_cfg["applications"][0]["deployments"][0]["ray_actor_options"]["num_gpus"] = 8
    bad["spec"]["serveConfigV2"] = yaml.safe_dump(serve_cfg)
    assert packing_errors(bad) == ["TargetEngine: fits node types []"]
    bad = copy.deepcopy(rs)
    frontend = bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][3]
    frontend["resources"]["CPU"] = "2"  # 2 orchestrators (1 CPU) + 2 ingresses (0.5) need 3
    assert any(e.startswith("max: Ingress replica") for e in packing_errors(bad))


def test_autoscaling_check_fails_on_tampered_manifest():
    rs = the_rayservice(manifest_docs("gpu-prod"))
    bad = copy.deepcopy(rs)
    bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = 2
    assert any("2 pods x 1 < 4 replicas" in e for e in autoscaling_errors(bad))
    bad = copy.deepcopy(rs)
    draft = bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]
    draft["resources"] = {k: v for k, v in draft["resources"].items() if not k.startswith("lookahead_")}
    draft["resources"]["lookahead_target"] = "1"
    errors = autoscaling_errors(bad)
    assert any("advertised by 2 groups" in e for e in errors) and any("advertised by 0 groups" in e for e in errors)


@pytest.mark.parametrize("profile", sorted(MANIFESTS))
def test_serve_ports(profile):
    docs = manifest_docs(profile)
    rs = the_rayservice(docs)
    cfg = PROFILES[profile]
    for name, t in pod_templates(rs):
        ports = {p["name"]: p["containerPort"] for p in t["spec"]["containers"][0]["ports"]}
        assert ports["serve"] == cfg.server.http_port == 8000
        assert ports["serve-grpc"] == cfg.server.grpc_port == 9000
        if name == "head":
            assert {k: ports[k] for k in ("gcs", "dashboard", "client")} == {"gcs": 6379, "dashboard": 8265, "client": 10001}
    serve_cfg = serve_cfg_of(rs)
    assert serve_cfg["http_options"]["port"] == 8000 and serve_cfg["grpc_options"]["port"] == 9000
    (svc,) = [d for d in docs if d["kind"] == "Service"]
    assert svc["spec"]["ports"] == [{"name": "serve-grpc", "port": 9000, "targetPort": 9000, "protocol": "TCP"}]
    assert svc["spec"]["selector"] == {"app.kubernetes.io/instance": rs["metadata"]["name"], "ray.io/serve": "true"}
    for _, t in pod_templates(rs):  # the Service selects Ray pods of this RayService
        assert t["metadata"]["labels"]["app.kubernetes.io/instance"] == rs["metadata"]["name"]


@pytest.mark.parametrize("profile", sorted(MANIFESTS))
def test_pods_run_as_non_root(profile):
    rs = the_rayservice(manifest_docs(profile))
    for name, t in pod_templates(rs):
        sc = t["spec"]["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000, name
        for c in t["spec"]["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert rs["spec"]["rayClusterConfig"]["autoscalerOptions"]["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("profile", sorted(MANIFESTS))
def test_every_container_has_requests_and_limits(profile):
    rs = the_rayservice(manifest_docs(profile))
    resources = [(f"{n}/{c['name']}", c["resources"]) for n, t in pod_templates(rs) for c in t["spec"]["containers"]]
    resources.append(("autoscaler", rs["spec"]["rayClusterConfig"]["autoscalerOptions"]["resources"]))
    for where, r in resources:
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(r[kind]), f"{where}: {kind}"
        assert kuberay.cpu_quantity(r["requests"]["cpu"]) <= kuberay.cpu_quantity(r["limits"]["cpu"]), where


@pytest.mark.parametrize("profile", sorted(MANIFESTS))
def test_images_pinned_by_tag(profile):
    rs = the_rayservice(manifest_docs(profile))
    images = {c["image"] for _, t in pod_templates(rs) for c in t["spec"]["containers"]}
    assert len(images) == 1  # head, workers (and the autoscaler, which defaults to the head image) match
    (image,) = images
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag and tag not in ("", "latest")
    assert image == profiles.K8S_PROFILES[profile].image


def test_image_check_rejects_unpinned():
    cfg = PROFILES["cpu-demo"]
    for image in ("ghcr.io/lookahead/lookahead", "ghcr.io/lookahead/lookahead:latest", "localhost:5000/lookahead"):
        with pytest.raises(ValueError):
            kuberay.rayservice(cfg, "x", image=image)
    kuberay.rayservice(cfg, "x", image="localhost:5000/lookahead:0.1.0")
    kuberay.rayservice(cfg, "x", image="ghcr.io/lookahead/lookahead@sha256:" + "0" * 64)


@pytest.mark.parametrize("profile", sorted(MANIFESTS))
def test_model_cache_mounted_in_all_pods(profile):
    """/models in every pod: the shared claim (GPU profiles) or the pod's own emptyDir (CPU demo)."""
    rs = the_rayservice(manifest_docs(profile))
    cache = profiles.K8S_PROFILES[profile].cache
    templates = pod_templates(rs)
    assert len(templates) >= 3
    for name, t in templates:
        vols = {v["name"]: v for v in t["spec"]["volumes"]}
        c = t["spec"]["containers"][0]
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/models"]
        if cache.mode == "shared":
            (pvc,) = load_docs(ROOT / "k8s" / profiles.K8S_PROFILES[profile].pvc_manifest)
            jsonschema.Draft7Validator(PVC_SCHEMA).validate(pvc)
            assert vols[mount["name"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"], name
            assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        else:
            assert vols[mount["name"]]["emptyDir"] == {"sizeLimit": cache.size}, name
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["LOOKAHEAD_HOME"] == "/models" and env["HF_HUB_OFFLINE"] == "1", name
    assert {p: k.cache.mode for p, k in profiles.K8S_PROFILES.items()} == {
        "cpu-demo": "local", "gpu-dev": "shared", "gpu-prod": "shared"}


def test_group_layout_errors():
    cfg = PROFILES["gpu-prod"]
    sizing = profiles.K8S_PROFILES["gpu-prod"].sizing
    no_judge = sizing.model_copy(update={"groups": [g for g in sizing.groups if g.name != "judge"]})
    with pytest.raises(ValueError, match="judge"):
        kuberay.group_layouts(cfg, no_judge)
    squeezed = sizing.model_copy(update={"groups": [
        g.model_copy(update={"gpus_per_pod": 2}) if g.name == "target" else g for g in sizing.groups]})
    with pytest.raises(ValueError, match="holds no target"):
        kuberay.group_layouts(cfg, squeezed)
    # a judge group is simply dropped when the config has no judge
    cpu = PROFILES["cpu-demo"]
    names = [lay.plan.name for lay in kuberay.group_layouts(cpu, kuberay.default_sizing(cpu))]
    assert names == ["target", "draft", "frontend"]


@pytest.mark.parametrize("profile", sorted(MANIFESTS))
def test_group_resources_are_structured_and_read_by_the_autoscaler(profile):
    """Ray resources live in each group's `resources` field (KubeRay 1.4+), not in the escaped
    JSON of rayStartParams, and Ray's own autoscaler reads from it what the pods advertise."""
    rs = the_rayservice(manifest_docs(profile))
    rc = rs["spec"]["rayClusterConfig"]
    types = ray_node_types(rs)
    # KubeRay rejects a group that sets them in both places
    for g in [rc["headGroupSpec"], *rc["workerGroupSpecs"]]:
        assert not {"num-cpus", "num-gpus", "memory", "resources"} & set(g.get("rayStartParams", {})), g
    for g in rc["workerGroupSpecs"]:
        assert all(isinstance(v, str) for v in g["resources"].values())  # Kubernetes quantities
        gpus = gpu_count(g["template"]["spec"]["containers"][0], "limits")
        seen = types[g["groupName"]]["resources"]
        assert seen["CPU"] == int(g["resources"]["CPU"])
        assert seen.get("GPU", 0) == gpus == float(g["resources"].get("GPU", 0))
        assert {k: v for k, v in seen.items() if k.startswith("lookahead_")} == kuberay.custom_resources(g) != {}
    assert types["headgroup"]["resources"]["CPU"] == 0


def test_upgrade_strategy_per_profile():
    """Every RayService names its upgrade strategy: GPU profiles None (no second GPU set during
    an upgrade), the CPU demo NewCluster (KubeRay's zero-downtime default)."""
    want = {"cpu-demo": "NewCluster", "gpu-dev": "None", "gpu-prod": "None"}
    assert set(want) == set(MANIFESTS)
    for profile, kind in want.items():
        rs = the_rayservice(manifest_docs(profile))
        assert rs["spec"]["upgradeStrategy"] == {"type": kind}, profile
        # the RayCluster's own upgradeStrategy is KubeRay's to leave unset for a RayService's cluster
        assert "upgradeStrategy" not in rs["spec"]["rayClusterConfig"]
    # any config: GPUs -> None, CPU only -> NewCluster
    assert kuberay.rayservice(PROFILES["gpu-dev"], "x", image="e.com/l:1")["spec"]["upgradeStrategy"]["type"] == "None"
    assert kuberay.rayservice(PROFILES["cpu-demo"], "x", image="e.com/l:1")["spec"]["upgradeStrategy"]["type"] == \
        "NewCluster"


_gpus = st.sampled_from([0, 0.25, 0.5, 1, 2, 4])


@st.composite
def role_deployment(draw, gpus=_gpus):
    lo = draw(st.integers(0, 3))
    return RoleDeployment(num_gpus=draw(gpus), num_cpus=draw(st.sampled_from([0, 0.5, 1, 2])),
                          autoscaling=AutoscalingConfig(min_replicas=lo, max_replicas=draw(st.integers(max(lo, 1), 9))))


@st.composite
def app_configs(draw):
    target = draw(role_deployment())
    eng = {"tensor_parallel_size": int(target.num_gpus)} if target.num_gpus >= 1 else {}
    draft = draw(st.none() | role_deployment())
    judge = draw(st.none() | role_deployment())
    return AppConfig(
        target=RoleConfig(engine=EngineConfig(model="t", engine_kwargs=eng), deployment=target),
        draft=RoleConfig(engine=EngineConfig(model="d"), deployment=draft) if draft else None,
        judge=RoleConfig(engine=EngineConfig(model="j"), deployment=judge) if judge else None,
        verifier=VerifierConfig(kind="llm-judge" if judge else "exact"),
        defaults=LookaheadDefaults(mode="lr" if draft else "ar"),
        server=ServerConfig(orchestrator=draw(role_deployment(st.just(0))), ingress=draw(role_deployment(st.just(0)))),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(app_configs())
def test_any_config_gives_a_consistent_manifest(cfg):
    rs = kuberay.rayservice(cfg, "prop", image="example.com/lookahead:1.2.3")
    assert all_checks(rs) == []
    assert app_config_from_data(serve_cfg_of(rs)) == cfg
