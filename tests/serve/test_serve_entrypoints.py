"""Serve's own commands on the application, without starting it: `serve build` on a shipped
profile writes a Serve config whose deployments carry the profile's placement, and
`build_app_from_args` takes a config file's path, as `serve run ... config=FILE` passes it.
(tests/serve/test_serve_run.py starts what `serve build` wrote.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from deployments.profiles import PROFILES
from deployments.serve_config import DEPLOYMENT_ROLES, role_deployment, role_deployments
from tests.support.paths import ROOT


def deployment_options(app) -> list[dict]:
    """Each deployment of an application as `serve build` writes it (the same private helpers)."""
    from ray.serve._private.build_app import build_app
    from ray.serve.deployment import deployment_to_schema

    return [deployment_to_schema(d).model_dump(exclude_unset=True) for d in build_app(app, name="x").deployments]


def test_serve_build_of_a_profile_writes_its_placement(tmp_path):
    out = tmp_path / "built.yaml"
    serve = Path(sys.executable).with_name("serve")
    done = subprocess.run([str(serve), "build", "deployments.app:gpu_prod", "-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (app,) = yaml.safe_load(out.read_text())["applications"]
    assert app["import_path"] == "deployments.app:gpu_prod"
    built = {DEPLOYMENT_ROLES[d["name"]]: role_deployment(d) for d in app["deployments"]}
    assert built == role_deployments(PROFILES["gpu-prod"])  # every role, autoscaled, with its GPUs


def test_build_app_from_args_takes_a_config_path():
    from deployments.app import build_app, build_app_from_args

    from_path = build_app_from_args({"config": str(ROOT / "deployments/configs/cpu-vllm.yaml")})
    assert deployment_options(from_path) == deployment_options(build_app(PROFILES["cpu-vllm"]))
