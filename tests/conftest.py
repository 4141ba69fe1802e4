"""The session's order, its shared resources, and the check that it leaves nothing behind.

Modules run in an explicit order, cheapest first, grouped by what they start, so each costly
resource is started once and is alive only while its users run:

  unit -> in-process transformers -> in-process vLLM -> Serve with transformers -> Serve with vLLM
  -> CLI subprocesses

One Ray cluster and one Serve instance serve the whole session (`serve_cluster`, started by the
first module that asks), each Serve module asking for its own application; models are loaded once
per session (`engines`). The test process is a child subreaper, so everything it starts stays in its
process tree (tests/support/processes.py): after each module, a replica of an application no longer
running or an orphaned Ray or vLLM process fails the module; when the session ends, any process
still in the tree or a port of ours still bound fails the run (and is then killed, so nothing
outlives the run). SIGTERM stops every process of the tree, then the run.
"""
from __future__ import annotations

import gc
import os
import signal
from pathlib import Path

import pytest

from tests.support import processes

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

UNIT, HF, VLLM, SERVE_HF, SERVE_VLLM, CLI = "unit", "in-process transformers", "in-process vLLM", \
    "Serve with transformers", "Serve with vLLM", "CLI subprocesses"
TIERS = (UNIT, HF, VLLM, SERVE_HF, SERVE_VLLM, CLI)

#: every test module, in the order it runs (a module missing here is a collection error)
MODULES: dict[str, str] = {
    "core/test_layers.py": UNIT,
    "core/test_suite_rules.py": UNIT,
    "core/test_stop_strings.py": UNIT,
    "core/test_orchestrator.py": UNIT,
    "core/test_rolling_window.py": UNIT,
    "core/test_policy.py": UNIT,
    "core/test_modes.py": UNIT,
    "verifier/test_kinds.py": UNIT,
    "api/test_request_spec.py": UNIT,
    "api/test_admission.py": UNIT,
    "verifier/test_plan_guard.py": UNIT,
    "verifier/test_verifier_precheck.py": UNIT,
    "api/test_metrics.py": UNIT,
    "serve/test_dashboard.py": UNIT,
    "serve/test_serve_args.py": UNIT,
    "serve/test_drain.py": UNIT,
    "k8s/test_k8s.py": UNIT,
    "k8s/test_images.py": UNIT,
    "k8s/test_model_job.py": UNIT,
    "k8s/test_model_fill.py": UNIT,
    "k8s/test_cluster_render.py": UNIT,
    "bench/test_bench_merge.py": UNIT,
    "bench/test_bench_quality.py": UNIT,
    "bench/test_traces.py": UNIT,
    "bench/test_gpu_bench.py": UNIT,
    "engines/test_models.py": HF,
    "verifier/test_verifiers.py": HF,
    "verifier/test_step_pairs.py": HF,
    "engines/test_static_decode.py": HF,
    "engines/test_lossless.py": HF,
    "engines/test_cross_tokenizer.py": HF,
    "api/test_openai_surface.py": HF,
    "bench/test_bench.py": HF,
    "engines/test_vllm_engine.py": VLLM,
    "engines/test_engine_contract.py": VLLM,  # last of its tier: it shuts the shared engines down
    "serve/test_serve_openai.py": SERVE_HF,
    "serve/test_serve_e2e.py": SERVE_HF,
    "serve/test_metrics_serve.py": SERVE_HF,
    "serve/test_reliability.py": SERVE_HF,
    "serve/test_replica_death.py": SERVE_HF,
    "serve/test_autoscaling.py": SERVE_HF,
    "serve/test_serve_vllm.py": SERVE_VLLM,
    "engines/test_cli_json.py": CLI,
    "serve/test_serve_entrypoints.py": CLI,
    "serve/test_serve_run.py": CLI,
    "serve/test_multinode.py": CLI,
    "serve/test_signals.py": CLI,
}
_ORDER = {m: i for i, m in enumerate(MODULES)}


def _module_of(item) -> str:
    return item.nodeid.split("::", 1)[0].removeprefix("tests/")


def pytest_collection_modifyitems(session, config, items):
    unknown = sorted({_module_of(i) for i in items} - set(MODULES))
    if unknown:
        raise pytest.UsageError(f"test modules missing from tests/conftest.py MODULES (give each a tier): {unknown}")
    here = Path(__file__).parent
    gone = [m for m in MODULES if not (here / m).exists()]
    if gone:
        raise pytest.UsageError(f"tests/conftest.py MODULES names modules that do not exist: {gone}")
    # stable: inside a module pytest's own order (parametrized fixtures grouped) is kept
    items.sort(key=lambda i: _ORDER[_module_of(i)])


def pytest_configure(config):
    processes.become_subreaper()
    processes.stop_everything_on_sigterm()


# -- shared resources ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def engines():
    """In-process engines, one per engine config, for the whole session (tests/support/engines.py)."""
    from tests.support.engines import ENGINES

    yield ENGINES
    ENGINES.close()


@pytest.fixture(scope="session")
def serve_cluster():
    """Ray and one Serve instance (free HTTP, gRPC and metrics ports) for the whole session."""
    from tests.support.serve_app import CLUSTER

    yield CLUSTER
    CLUSTER.shutdown()


@pytest.fixture(autouse=True, scope="module")
def _cli_modules_run_alone(request):
    """A CLI module starts its own Ray, Serve and engines in subprocesses: the session's (about
    10 GB with the vLLM engines loaded) are released before the first one, as no later module
    uses them (the order above), so the two never add up on a small machine."""
    if MODULES.get(_module_of(request.node)) == CLI:
        from tests.support.engines import ENGINES
        from tests.support.serve_app import CLUSTER

        CLUSTER.shutdown()
        ENGINES.close()
        gc.collect()  # the in-process models' weights go with their last reference
    yield


@pytest.fixture(autouse=True, scope="module")
def _module_leaves_nothing_behind():
    """After each module: no Serve replica of an application no longer running, no orphaned Ray
    worker or vLLM process."""
    yield
    from tests.support.serve_app import stray

    left = processes.wait_gone(stray, timeout=60)
    assert not left, "this module left processes running:\n" + "\n".join(map(str, left))


# -- the end of the session ------------------------------------------------------------------
def pytest_sessionfinish(session, exitstatus):
    from tests.support.engines import ENGINES
    from tests.support.serve_app import CLUSTER

    ENGINES.close()  # idempotent: normally done by the fixtures' teardown already
    CLUSTER.shutdown()
    left = processes.wait_gone(lambda procs: [p for p in procs if not processes.ends_with_us(p)], timeout=60)
    ports = [p for p in CLUSTER.ports() if processes.port_in_use(p)]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not left and not ports:
        if reporter:
            reporter.write_line("leftover check: no process of this session is running, its ports are free",
                                green=True)
        return
    lines = [f"  still running: {p}" for p in left] + [f"  port still bound: {p}" for p in ports]
    if reporter:
        reporter.write_line("leftover check FAILED:\n" + "\n".join(lines), red=True)
    for p in left:  # nothing outlives the run, even when it failed
        try:
            os.kill(p.pid, signal.SIGKILL)
        except OSError:
            pass
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
