"""Ray Serve deploy config (``serve run`` / ``serve deploy`` / KubeRay ``serveConfigV2``)
generated from one :class:`~deployments.config.AppConfig`.

The output follows ``ray.serve.schema.ServeDeploySchema``: HTTP and gRPC proxy options and one
application whose ``args`` carry the AppConfig without its placement (``deployments.app:build_app_from_args``
rebuilds the application from there) and whose ``deployments`` list is the one copy of each Serve
deployment's placement and scaling (the matching :class:`~deployments.config.RoleDeployment`):
Serve applies that list over whatever the code binds, so a second copy under ``args`` would be
one nobody reads. :func:`app_config_from_data` puts the two back together.

The Ingress is the one deployment Serve never refuses or times out: its entry gives Serve no
limit (:data:`INGRESS_SERVE_LIMITS`) and hands the ingress its configured ``max_ongoing_requests``
and ``max_queued_requests`` as ``user_config`` (the ingress counts its requests against them and
answers 503 itself, deployments/api/admission.py), and the proxies' ``request_timeout_s`` sits
:data:`PROXY_TIMEOUT_MARGIN_S` above the longest deadline: Serve's proxy answers both in plain
text, the application in OpenAI's shape.

With ``role_resources=True`` (the Kubernetes flavour) every replica also asks for one unit of
a custom Ray resource named after its role (``lookahead_target``, ``lookahead_draft``, ...).
Only the KubeRay worker group that hosts that role advertises the resource, so a replica
lands on its own group and the Ray autoscaler knows which group to grow
(see :mod:`deployments.kuberay.manifests`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deployments.config import AppConfig, RoleDeployment, ServerConfig

IMPORT_PATH = "deployments.app:build_app_from_args"
GRPC_SERVICER_FUNCTIONS = [
    "protos.lookahead.v1.lookahead_pb2_grpc.add_LookaheadServiceServicer_to_server",
    # the standard health service (Check, Watch), for Kubernetes gRPC probes and load balancers
    "protos.grpc.health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]

# Serve deployment name -> role name. The role name keys the custom Ray resource and the
# KubeRay worker group bookkeeping.
DEPLOYMENT_ROLES: dict[str, str] = {
    "TargetEngine": "target",
    "DraftEngine": "draft",
    "JudgeEngine": "judge",
    "Orchestrator": "orchestrator",
    "Ingress": "ingress",
}
ROLE_DEPLOYMENTS: dict[str, str] = {role: name for name, role in DEPLOYMENT_ROLES.items()}
ROLES: tuple[str, ...] = tuple(DEPLOYMENT_ROLES.values())
#: the roles that run a model engine (EngineDeployment), each an optional RoleConfig of AppConfig
#: but the target
ENGINE_ROLES: tuple[str, ...] = ("target", "draft", "judge")
RESOURCE_PREFIX = "lookahead_"
#: Serve's own limits for the Ingress: in effect none (its own count is the limit)
INGRESS_SERVE_LIMITS: dict[str, int] = {"max_ongoing_requests": 100_000, "max_queued_requests": -1}
#: the ingress's limits, as its user_config carries them
INGRESS_LIMITS: tuple[str, ...] = ("max_ongoing_requests", "max_queued_requests")
#: how far above the longest deadline (server.request_timeout_s) Serve's proxies time a request
#: out: the application's 504 always comes first; the proxy's stays a backstop for a hung replica
PROXY_TIMEOUT_MARGIN_S = 60


def role_resource(role: str) -> str:
    """Name of the custom Ray resource that pins a role's replicas to its worker group."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    return RESOURCE_PREFIX + role


def role_deployments(cfg: AppConfig) -> dict[str, RoleDeployment]:
    """The roles present in ``cfg`` and their Serve placement/scaling, in deployment order."""
    out = {role: getattr(cfg, role).deployment for role in ENGINE_ROLES if getattr(cfg, role) is not None}
    return {**out, "orchestrator": cfg.server.orchestrator, "ingress": cfg.server.ingress}


def with_role_deployments(cfg: AppConfig, deps: dict[str, RoleDeployment]) -> AppConfig:
    """``cfg`` with the given roles' placement/scaling replaced (the inverse of role_deployments)."""
    update: dict[str, Any] = {role: getattr(cfg, role).model_copy(update={"deployment": deps[role]})
                              for role in ENGINE_ROLES if role in deps and getattr(cfg, role) is not None}
    server = {role: deps[role] for role in ("orchestrator", "ingress") if role in deps}
    if server:
        update["server"] = cfg.server.model_copy(update=server)
    return cfg.model_copy(update=update)


#: what ``args.config`` leaves out: the placement the ``deployments`` list carries
PLACEMENT: dict[str, Any] = {**{role: {"deployment"} for role in ENGINE_ROLES}, "server": {"orchestrator", "ingress"}}


def app_args(cfg: AppConfig) -> dict[str, Any]:
    """The application's ``args``: the AppConfig without its placement."""
    return {"config": cfg.model_dump(mode="json", exclude=PLACEMENT)}


def _num(x: float) -> int | float:
    """1.0 -> 1, 0.5 -> 0.5 (keeps the YAML readable)."""
    return int(x) if float(x).is_integer() else float(x)


def deployment_entry(name: str, dep: RoleDeployment, *, resources: dict[str, float] | None = None) -> dict:
    actor: dict[str, Any] = {"num_cpus": _num(dep.num_cpus), "num_gpus": _num(dep.num_gpus)}
    wanted = {**dep.resources, **(resources or {})}
    if wanted:
        actor["resources"] = {k: _num(v) for k, v in wanted.items()}
    a = dep.autoscaling
    limits = {k: getattr(dep, k) for k in INGRESS_LIMITS}
    ingress = name == ROLE_DEPLOYMENTS["ingress"]
    return {
        "name": name,
        **(INGRESS_SERVE_LIMITS if ingress else limits),
        **({"user_config": limits} if ingress else {}),
        "autoscaling_config": {k: _num(v) for k, v in a.serve_options().items()},
        "health_check_period_s": _num(dep.health_check_period_s),
        "health_check_timeout_s": _num(dep.health_check_timeout_s),
        "ray_actor_options": actor,
    }


def role_deployment(entry: dict) -> RoleDeployment:
    """The RoleDeployment of one ``deployments`` entry (the inverse of deployment_entry; the
    roles' own custom resources, a Kubernetes detail, are left out). A fixed ``num_replicas`` is
    read as autoscaling from and to that count."""
    actor = entry.get("ray_actor_options") or {}
    fields = {k: entry[k] for k in ("max_ongoing_requests", "max_queued_requests", "health_check_period_s",
                                     "health_check_timeout_s") if k in entry}
    if entry.get("name") == ROLE_DEPLOYMENTS["ingress"]:  # Serve's are none: the ingress's own are its user_config
        fields.update({k: v for k, v in (entry.get("user_config") or {}).items() if k in INGRESS_LIMITS})
    fields.update({k: actor[k] for k in ("num_gpus", "num_cpus") if k in actor})
    own = {role_resource(r) for r in ROLES}
    extra = {k: v for k, v in (actor.get("resources") or {}).items() if k not in own}
    if extra:
        fields["resources"] = extra
    if "autoscaling_config" in entry:
        fields["autoscaling"] = entry["autoscaling_config"]
    elif isinstance(entry.get("num_replicas"), int):
        fields["autoscaling"] = {"min_replicas": entry["num_replicas"], "max_replicas": entry["num_replicas"]}
    return RoleDeployment.model_validate(fields)


def proxy_options(server: ServerConfig, *, host: str = "0.0.0.0") -> tuple[dict, dict]:
    """Serve's ``http_options`` and ``grpc_options`` (without the servicers) for ``server``: its
    ports, and a proxy timeout above any deadline the application keeps."""
    timeout = _num(server.request_timeout_s + PROXY_TIMEOUT_MARGIN_S)
    return ({"host": host, "port": server.http_port, "request_timeout_s": timeout},
            {"port": server.grpc_port, "request_timeout_s": timeout})


def serve_config(
    cfg: AppConfig,
    *,
    app_name: str = "lookahead",
    route_prefix: str = "/",
    role_resources: bool = False,
    proxy_location: str = "EveryNode",
) -> dict:
    """Ray Serve deploy config (a dict matching ``ServeDeploySchema``) for ``cfg``.

    ``role_resources``: add ``{"lookahead_<role>": 1}`` to every deployment's
    ``ray_actor_options.resources`` (needed on KubeRay, where worker groups advertise them;
    leave it off for ``serve run`` on one machine, which has no such resources).
    """
    deployments = []
    for role, dep in role_deployments(cfg).items():
        res = {role_resource(role): 1} if role_resources else None
        deployments.append(deployment_entry(ROLE_DEPLOYMENTS[role], dep, resources=res))
    http_options, grpc_options = proxy_options(cfg.server)
    return {
        "proxy_location": proxy_location,
        "http_options": http_options,
        "grpc_options": {**grpc_options, "grpc_servicer_functions": list(GRPC_SERVICER_FUNCTIONS)},
        "applications": [
            {
                "name": app_name,
                "route_prefix": route_prefix,
                "import_path": IMPORT_PATH,
                "args": app_args(cfg),
                "deployments": deployments,
            }
        ],
    }


# --------------------------------------------------------------------------- YAML helpers


class _Dumper(yaml.SafeDumper):
    """Block style, insertion order, multi-line strings as ``|`` literals."""


def _str_representer(dumper: yaml.SafeDumper, data: str):
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(data: Any) -> str:
    """Deterministic YAML text (keys keep their insertion order)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=4096)


def dump_yaml_all(docs: list[Any]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         allow_unicode=True, width=4096, explicit_start=True)


def serve_yaml(cfg: AppConfig, *, header: str | None = None, **kwargs: Any) -> str:
    """``serve_config(cfg, **kwargs)`` as YAML text, optionally preceded by ``# header`` lines."""
    text = dump_yaml(serve_config(cfg, **kwargs))
    if header:
        text = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + text
    return text


def write_serve_yaml(cfg: AppConfig, path: str | Path, *, header: str | None = None, **kwargs: Any) -> Path:
    """Write ``serve_config(cfg, **kwargs)`` to ``path`` (usable with ``serve run path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(serve_yaml(cfg, header=header, **kwargs))
    return path


def app_config_from_data(data: Any, *, app_name: str | None = None) -> AppConfig:
    """AppConfig from parsed YAML: a plain AppConfig mapping, a Serve deploy config (the
    config is ``applications[i].args.config`` with the placement of its ``deployments`` list;
    the first application unless ``app_name``) or a KubeRay RayService manifest (its
    ``spec.serveConfigV2``)."""
    if not isinstance(data, dict):
        raise ValueError("expected a YAML mapping")
    if data.get("kind") == "RayService":
        inner = yaml.safe_load(data["spec"]["serveConfigV2"])
        return app_config_from_data(inner, app_name=app_name)
    if "applications" in data:
        apps = data["applications"] or []
        if not apps:
            raise ValueError("Serve config has no applications")
        if app_name is not None:
            matching = [a for a in apps if a.get("name") == app_name]
            if not matching:
                raise ValueError(f"no application named {app_name!r}")
            app = matching[0]
        else:
            app = apps[0]
        args = app.get("args") or {}
        if "config" not in args:
            raise ValueError(f"application {app.get('name')!r} has no args.config")
        cfg = AppConfig.model_validate(args["config"])
        deps = {DEPLOYMENT_ROLES[d["name"]]: role_deployment(d) for d in app.get("deployments") or []
                if d.get("name") in DEPLOYMENT_ROLES}
        return with_role_deployments(cfg, deps)
    return AppConfig.model_validate(data)


def load_app_config(path: str | Path, *, app_name: str | None = None) -> AppConfig:
    """Load an AppConfig from a plain AppConfig YAML or from a Serve config YAML
    (``applications[0].args.config``); a RayService manifest works too."""
    with open(path) as f:
        data = yaml.safe_load(f)
    return app_config_from_data(data, app_name=app_name)


__all__ = [
    "DEPLOYMENT_ROLES", "ENGINE_ROLES", "GRPC_SERVICER_FUNCTIONS", "IMPORT_PATH", "INGRESS_LIMITS",
    "INGRESS_SERVE_LIMITS", "PROXY_TIMEOUT_MARGIN_S", "ROLES", "ROLE_DEPLOYMENTS", "app_args",
    "app_config_from_data", "deployment_entry", "dump_yaml", "dump_yaml_all", "load_app_config", "proxy_options",
    "role_deployment", "role_deployments", "role_resource", "serve_config", "serve_yaml", "with_role_deployments",
    "write_serve_yaml",
]
