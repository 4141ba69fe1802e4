"""What an accepted draft becomes in the answer; shared by the sync and async schedules."""
from __future__ import annotations

from orchestrator.types import Step


def adopt(draft: Step, target: Step) -> Step:
    """The step to emit for an accepted draft.

    When the texts are identical the target's own tokens and stop reason are kept (marked as
    the draft's): the target context then matches plain target decoding token for token,
    which is what makes lossless mode exact across tokenizers.
    """
    if draft.text == target.text:
        return Step(target.text, target.token_ids, target.tokenizer_key, target.stop_reason, "draft")
    return draft
