"""The test suite's own rules, checked on its source (AST, nothing imported):

- a test module imports shared helpers from tests/support, never another test module;
- the scripted engine (tests/support/fakes.py) is used only by the core's unit tests of the
  orchestrator's control flow: every other test runs real engines and models.
"""
from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import ROOT

TESTS = ROOT / "tests"


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def suite_modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if "support" not in p.parts)


def test_no_test_module_imports_another():
    offenders = {}
    for path in suite_modules():
        bad = sorted(m for m in imported_modules(path) if m.startswith("tests.")
                     and not m.startswith("tests.support"))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders, offenders


def test_the_scripted_engine_is_used_by_core_tests_only():
    users = sorted(str(p.relative_to(TESTS)) for p in suite_modules()
                   if any(m.startswith("tests.support.fakes") for m in imported_modules(p)))
    assert users and all(u.startswith("core/") for u in users), users
