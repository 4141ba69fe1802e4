"""`lookahead serve` and `lookahead --version` argument handling (no Ray started): what AppConfig
and what ray.init arguments the flags give."""
from __future__ import annotations

import tomllib

import pytest

from deployments.api.auth import ApiKeys
from deployments.app import ray_init_args
from deployments.cli.main import build_parser
from deployments.cli.serve import serve_plan
from deployments.kuberay.manifests import APP_VERSION
from deployments.profiles import PROFILES
from deployments.serve_config import dump_yaml
from tests.support.paths import ROOT


def plan(*argv: str):
    args = build_parser().parse_args(["serve", *argv])
    return serve_plan(args)


def test_defaults_are_the_cpu_demo_on_a_private_ray():
    cfg, start = plan()
    assert cfg == PROFILES["cpu-demo"]
    assert start == {"address": None, "host": "0.0.0.0", "fake_gpus": 0, "env_vars": None}
    init = ray_init_args(**{k: start[k] for k in ("address", "fake_gpus", "env_vars")})
    assert "address" not in init and "runtime_env" not in init
    assert init["num_cpus"] >= 4 and init["num_gpus"] is None and init["include_dashboard"] is False


def test_ports_override_the_config_and_nothing_else(tmp_path):
    path = tmp_path / "app.yaml"
    base = PROFILES["gpu-dev"]
    path.write_text(dump_yaml(base.model_dump(mode="json")))
    cfg, _ = plan("--config", str(path), "--port", "8100", "--grpc-port", "9100")
    assert (cfg.server.http_port, cfg.server.grpc_port) == (8100, 9100)
    assert cfg.model_copy(update={"server": base.server}) == base  # only the ports changed
    cfg, _ = plan("--config", str(path), "--port", "8100")
    assert (cfg.server.http_port, cfg.server.grpc_port) == (8100, base.server.grpc_port)


@pytest.mark.parametrize("argv, message", [
    (["--port", "9000"], "share port 9000"),  # the default gRPC port
    (["--port", "70000"], "not a TCP port"),
    (["--address", "auto", "--fake-gpus", "2"], "--fake-gpus"),
])
def test_arguments_that_cannot_go_together(argv, message):
    with pytest.raises(ValueError, match=message):
        plan(*argv)


def test_address_connects_without_sizing_the_cluster():
    cfg, start = plan("--address", "10.0.0.5:6379", "--host", "127.0.0.1")
    assert start["address"] == "10.0.0.5:6379" and start["host"] == "127.0.0.1"
    init = ray_init_args(address=start["address"], quiet=True)
    assert init == {"address": "10.0.0.5:6379", "log_to_driver": False}  # no num_cpus/num_gpus/temp dir
    with pytest.raises(ValueError, match="fake GPUs"):
        ray_init_args(address="auto", fake_gpus=1)


def test_api_keys_reach_the_replicas_through_the_runtime_env():
    cfg, start = plan("--api-key", "key-one,key-two", "--api-key", " key-three ", "--address", "auto")
    assert start["env_vars"] == {cfg.server.api_keys_env: "key-one,key-two,key-three"}
    init = ray_init_args(address=start["address"], env_vars=start["env_vars"])
    assert init["runtime_env"] == {"env_vars": {"LOOKAHEAD_API_KEYS": "key-one,key-two,key-three"}}
    # a private Ray gets them the same way
    assert ray_init_args(env_vars=start["env_vars"])["runtime_env"] == init["runtime_env"]



def test_the_ingress_reads_the_keys_as_given(monkeypatch):
    cfg, start = plan("--api-key", "key-one,key-two")
    monkeypatch.setenv(cfg.server.api_keys_env, start["env_vars"][cfg.server.api_keys_env])
    keys = ApiKeys.load(cfg.server.api_keys_env, cfg.server.api_keys_file)  # as Ingress.__init__ does
    assert keys.allows("Bearer key-two") and not keys.allows("Bearer key-three")


def test_version_is_pyprojects(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"lookahead {version}"
    assert APP_VERSION == version  # the manifests' app.kubernetes.io/version label too


def test_an_unreachable_cluster_is_a_clear_error(monkeypatch, capsys):
    """Ray refuses a connection without the cluster's token (token auth is Ray's default); the
    command says how to give it instead of ending in a traceback."""
    import ray

    def refuse(**init):  # what ray.init raises when the cluster will not take the connection
        raise ConnectionError(f"Failed to connect to Ray cluster at {init.get('address')}")

    # no real connection attempt (a timeout against an unroutable address) and no private Ray started
    monkeypatch.setattr(ray, "init", refuse)
    args = build_parser().parse_args(["serve", "--address", "10.0.0.5:6379"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "10.0.0.5:6379" in err and "RAY_AUTH_MODE=token" in err and "RAY_AUTH_TOKEN" in err
    # a private Ray that fails to start is not mistaken for a cluster's refusal
    args = build_parser().parse_args(["serve"])
    with pytest.raises(ConnectionError):
        args.func(args)


@pytest.mark.parametrize("lr_wall, accepted, claim", [
    (5.0, 0, "the gain over ar comes from here"),  # faster than ar, no drafted step used: the token level
    (20.0, 0, "lr+sd ran at 0.50x ar's speed in all"),  # slower than ar: no gain to credit anyone with
    (5.0, 3, "lr+sd ran at 2.00x ar's speed in all"),  # drafted steps used too: not the token level alone
])
def test_the_demo_credits_the_token_level_only_with_a_gain_it_made(lr_wall, accepted, claim):
    from deployments.cli.serve import _layer_lines

    lr = {"wall_s": lr_wall, "token_level": {"spec_steps": 40, "accepted_tokens": 30, "draft_tokens": 90},
          "stats": {"tokens": 100, "accepted_steps": accepted, "verified_steps": 4, "depth_counts": [3, 2]}}
    ar = {"wall_s": 10.0, "stats": {"tokens": 100}}
    token_line = _layer_lines(lr, ar)[1]
    assert token_line.startswith("  token level") and token_line.endswith(claim), token_line
