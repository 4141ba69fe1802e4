"""Each verifier kind declares what it needs (verifier/kinds.py), and the factory, the config
and the manifests hold it to that declaration."""
from __future__ import annotations

import pytest

from verifier.factory import build_verifier
from verifier.kinds import KINDS, VERIFIER_KINDS, needs


class Scorer:
    async def choice_probs(self, prompts, choices):
        return [[1.0 / len(choices)] * len(choices) for _ in prompts]


@pytest.mark.parametrize("kind", VERIFIER_KINDS)
def test_the_factory_asks_for_exactly_what_the_kind_declares(kind):
    k = needs(kind)
    given = {"judge": Scorer()} if "judge" in k.roles else {}
    given |= {"target": Scorer()} if "target" in k.roles else {}
    for field in k.models:  # a declared model is refused when missing (loading one is for other tests)
        with pytest.raises(ValueError, match=field):
            build_verifier(kind, **given)
    if not k.models:
        assert build_verifier(kind, **given) is not None
    for role in k.roles:  # each declared role is needed
        with pytest.raises(ValueError, match=role):
            build_verifier(kind, **{r: s for r, s in given.items() if r != role})


def test_the_config_refuses_a_kind_whose_role_is_missing():
    from deployments.config import AppConfig, EngineConfig, RoleConfig, VerifierConfig

    role = RoleConfig(engine=EngineConfig(model="m"))
    for kind, k in KINDS.items():
        if "judge" in k.roles:
            with pytest.raises(ValueError, match=f"{kind}' needs a judge role"):
                AppConfig(target=role, draft=role, verifier=VerifierConfig(kind=kind))
            assert AppConfig(target=role, draft=role, judge=role, verifier=VerifierConfig(kind=kind))
        else:
            assert AppConfig(target=role, draft=role, verifier=VerifierConfig(kind=kind))


def test_the_orchestrator_pods_wait_for_the_models_the_default_kind_loads():
    from deployments.config import AppConfig, EngineConfig, RoleConfig, VerifierConfig
    from deployments.kuberay.manifests import role_models
    from deployments.kuberay.model_job import models_to_fill

    role = RoleConfig(engine=EngineConfig(model="m"))
    for kind in VERIFIER_KINDS:
        cfg = AppConfig(target=role, draft=role, judge=role, verifier=VerifierConfig(kind=kind, embedding_model="e"))
        assert role_models(cfg)["orchestrator"] == (["e"] if needs(kind).models else [])
        assert "e" in models_to_fill(cfg)  # a request may pick the embedding verifier on any server
