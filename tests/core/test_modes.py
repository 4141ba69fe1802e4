"""A mode is two layers: steps (asked per request) and tokens (the target engine's setting).
The pipeline and the session report the mode that really ran; asking for a token layer the
target does not have is an error, never `ar` under another name."""
from __future__ import annotations

import pytest

from orchestrator.lookahead import LookaheadParams, generate
from orchestrator.modes import MODES, Mode
from orchestrator.types import Prompt
from tests.support.fakes import ScriptedEngine
from verifier.exact import ExactVerifier

TRUTH = ["A\n\n", "B\n\n", "C."]


def test_names_and_layers_round_trip():
    assert [Mode.parse(n).name for n in MODES] == list(MODES)
    assert [(Mode.parse(n).steps, Mode.parse(n).tokens) for n in MODES] == [
        (False, False), (False, True), (True, False), (True, True)]
    assert [Mode.parse(n).core for n in MODES] == ["ar", "ar", "lr", "lr"]
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        Mode.parse("fast")


def test_the_token_layer_is_the_engines():
    # a target that speculates tokens runs them whatever the request asked: reported, not hidden
    assert Mode.parse("ar").run_on(True).name == "sd"
    assert Mode.parse("lr").run_on(True).name == "lr+sd"
    assert Mode.parse("lr+sd").run_on(True).name == "lr+sd"
    assert Mode.parse("lr").run_on(False).name == "lr"
    # asked of a target without them: refused, naming what it can run instead
    for name, instead in (("sd", "'ar'"), ("lr+sd", "'lr'")):
        with pytest.raises(ValueError, match=f"needs token-level speculation.*ask for {instead}"):
            Mode.parse(name).run_on(False)


@pytest.mark.parametrize("core, tokens, reported", [("ar", False, "ar"), ("ar", True, "sd"),
                                                     ("lr", False, "lr"), ("lr", True, "lr+sd")])
async def test_the_session_reports_the_mode_that_ran(core, tokens, reported):
    params = LookaheadParams(mode=core, tokens=tokens, depth=2)
    result = await generate(ScriptedEngine(TRUTH), Prompt(text="q"), params, ScriptedEngine(TRUTH), ExactVerifier())
    assert result.stats.mode == reported and result.text == "".join(TRUTH)
    assert (result.stats.accepted_steps > 0) == (core == "lr")


def test_pipeline_params_take_the_token_layer_from_the_target():
    from deployments.api.request import RequestOptions
    from deployments.config import LookaheadDefaults
    from deployments.pipeline import lookahead_params

    defaults = LookaheadDefaults(mode="lr")
    assert (lookahead_params(defaults).mode, lookahead_params(defaults).tokens) == ("lr", False)
    on_ngram = lookahead_params(defaults, RequestOptions(mode="ar"), token_speculation="ngram")
    assert (on_ngram.mode, on_ngram.tokens) == ("ar", True)
    with pytest.raises(ValueError, match="needs token-level speculation"):
        lookahead_params(defaults, RequestOptions(mode="sd"), token_speculation="none")


def test_a_config_whose_default_mode_cannot_run_is_refused():
    from deployments.config import AppConfig, EngineConfig, LookaheadDefaults, RoleConfig

    target = RoleConfig(engine=EngineConfig(model="t"))
    with pytest.raises(ValueError, match="needs a draft role"):
        AppConfig(target=target, defaults=LookaheadDefaults(mode="lr"))
    with pytest.raises(ValueError, match="needs token-level speculation"):
        AppConfig(target=target, defaults=LookaheadDefaults(mode="sd"))
    ngram = RoleConfig(engine=EngineConfig(model="t", token_speculation="ngram"))
    assert AppConfig(target=ngram, defaults=LookaheadDefaults(mode="sd")).defaults.mode == "sd"
