"""Import layers, checked on the source (AST, no imports executed, a second or so).

Every import counts, module-level or inside a function: a lazy import is still an arrow.
Layers, bottom to top (a module may import its own layer and the ones listed for it):

    orchestrator/            the core: standard library only (no Ray, no torch)
    protos/                  generated gRPC stubs
    verifier/                orchestrator
    deployments.config       orchestrator, verifier.kinds (pydantic config; what each verifier kind needs)
    deployments.model_cache  -                       (local model cache)
    deployments.model_fill   model_cache             (fills a cache volume: packages, archive, hub)
    deployments.engines      config, model_cache, orchestrator
    deployments.api          config, orchestrator, protos, verifier.kinds; no Ray (OpenAI/HTTP/gRPC mapping)
    deployments.pipeline     config, engines, model_cache, api.request (the typed request), verifier, orchestrator
    deployments.serve_config config, orchestrator
    deployments.serve        everything above; Ray Serve lives here
    deployments.app          serve, config, serve_config, profiles (build_app, start_local)
    deployments.profiles     config                  (the shipped AppConfigs)
    deployments.kuberay      config, serve_config, profiles, orchestrator, verifier.kinds
    benchmarks/              everything above but the CLI (bench, GPU, verifiers, serving)
    deployments.cli          everything: the `lookahead` command on top (generate, serve, k8s, bench ...)

and no import cycle between modules, however long.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGES = ("orchestrator", "verifier", "deployments", "protos", "benchmarks")

_BELOW_SERVE = ("deployments.config", "deployments.model_cache", "deployments.engines", "deployments.api",
                "deployments.pipeline", "deployments.serve_config", "verifier", "orchestrator", "protos")
ALLOWED: dict[str, tuple[str, ...]] = {
    "orchestrator": ("orchestrator",),
    "protos": ("protos",),
    "verifier": ("verifier", "orchestrator"),
    "deployments.config": ("deployments.config", "orchestrator", "verifier.kinds"),
    "deployments.model_cache": ("deployments.model_cache",),
    "deployments.engines": ("deployments.engines", "deployments.config", "deployments.model_cache", "orchestrator"),
    "deployments.api": ("deployments.api", "deployments.config", "orchestrator", "protos", "verifier.kinds"),
    "deployments.pipeline": ("deployments.pipeline", "deployments.config", "deployments.engines",
                             "deployments.model_cache", "deployments.api.request", "verifier", "orchestrator"),
    "deployments.serve_config": ("deployments.serve_config", "deployments.config", "orchestrator"),
    "deployments.serve": ("deployments.serve",) + _BELOW_SERVE,
    "deployments.app": ("deployments.app", "deployments.serve", "deployments.config", "deployments.serve_config",
                        "deployments.profiles"),
    "deployments.model_fill": ("deployments.model_fill", "deployments.model_cache"),
    "deployments.profiles": ("deployments.profiles", "deployments.config"),
    "deployments.kuberay": ("deployments.kuberay", "deployments.config", "deployments.serve_config", "deployments.profiles",
                            "orchestrator", "verifier.kinds"),
    "deployments.cli": ("deployments", "benchmarks", "verifier", "orchestrator", "protos"),
}
# The CLI is on top: the benchmarks use everything below it, and the CLI runs them.
ALLOWED["benchmarks"] = ("benchmarks", "orchestrator", "verifier", "protos") + tuple(
    layer for layer in ALLOWED if layer.startswith("deployments.") and layer != "deployments.cli")
# Third-party packages a layer must not touch (prefix match on the top-level name).
FORBIDDEN_THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "orchestrator": ("ray", "torch", "transformers", "vllm", "fastapi", "grpc", "pydantic"),
    "verifier": ("ray", "vllm", "fastapi", "grpc"),
    "deployments.engines": ("ray", "fastapi", "grpc"),
    "deployments.api": ("ray",),
    "deployments.config": ("ray", "torch", "vllm"),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules(root: Path) -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (root / pkg).rglob("*.py"):
            if not path.name.endswith("_pb2.py") and not path.name.endswith("_pb2_grpc.py"):
                found[module_name(path, root)] = path
    return found


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module this file imports (absolute names), wherever the import statement is."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)  # `from pkg import module` is an arrow to the module
    return out


def layer_of(name: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if name == layer or name.startswith(layer + "."):
            return layer
    return None


def violations(root: Path) -> list[str]:
    mods = project_modules(root)
    known = set(mods)
    graph: dict[str, set[str]] = {}
    problems = []
    for name, path in sorted(mods.items()):
        layer = layer_of(name)
        imported = imports_of(path, name, known)
        graph[name] = {m for m in imported if m in known and m != name}
        for m in sorted(imported):
            top = m.split(".")[0]
            if top in PACKAGES:
                if layer and not any(m == a or m.startswith(a + ".") for a in ALLOWED[layer]):
                    problems.append(f"{name} imports {m}: layer {layer} may import only {', '.join(ALLOWED[layer])}")
            elif layer and any(top == f for f in FORBIDDEN_THIRD_PARTY.get(layer, ())):
                problems.append(f"{name} imports {m}: layer {layer} must not depend on {top}")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component larger than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_repository_respects_its_layers():
    problems = violations(ROOT)
    assert not problems, "\n".join(problems)


def test_every_project_module_has_a_layer():
    assert not [m for m in project_modules(ROOT) if layer_of(m) is None and m not in PACKAGES and m != "deployments"]


def skeleton(root: Path, *subpackages: str) -> None:
    """Empty project packages (and the given subpackages) under root, for planted imports."""
    for pkg in PACKAGES + subpackages:
        (root / pkg).mkdir()
        (root / pkg / "__init__.py").write_text("")


@pytest.mark.parametrize("planted, expected", [
    ("orchestrator/x.py", "orchestrator.x imports deployments.config"),
    ("verifier/x.py", "verifier.x imports deployments.config"),
])
def test_a_planted_upward_import_is_caught(tmp_path, planted, expected):
    skeleton(tmp_path)
    (tmp_path / "deployments" / "config.py").write_text("import pydantic\n")
    (tmp_path / planted).write_text("def later():\n    from deployments.config import AppConfig\n")
    assert any(p.startswith(expected) for p in violations(tmp_path))


def test_ray_in_the_api_layer_and_a_long_cycle_are_caught(tmp_path):
    skeleton(tmp_path, "deployments/api")
    (tmp_path / "deployments" / "api" / "http.py").write_text("from ray import serve\n")
    (tmp_path / "orchestrator" / "a.py").write_text("from orchestrator import b\n")
    (tmp_path / "orchestrator" / "b.py").write_text("import orchestrator.c\n")
    (tmp_path / "orchestrator" / "c.py").write_text("def f():\n    from orchestrator.a import x\n")
    problems = violations(tmp_path)
    assert "deployments.api.http imports ray: layer deployments.api must not depend on ray" in problems
    assert "import cycle: orchestrator.a -> orchestrator.b -> orchestrator.c -> orchestrator.a" in problems


def test_a_benchmark_importing_the_cli_is_caught(tmp_path):
    skeleton(tmp_path, "deployments/cli")
    (tmp_path / "deployments" / "cli" / "args.py").write_text("from benchmarks import x\n")  # the CLI on top: fine
    (tmp_path / "deployments" / "config.py").write_text("")
    (tmp_path / "benchmarks" / "x.py").write_text("from deployments.config import y\n")  # below the CLI: fine
    (tmp_path / "benchmarks" / "y.py").write_text("def later():\n    from deployments.cli.args import z\n")
    problems = violations(tmp_path)
    assert [p for p in problems if not p.startswith("import cycle")] == [
        "benchmarks.y imports deployments.cli.args: layer benchmarks may import only "
        + ", ".join(ALLOWED["benchmarks"])]
