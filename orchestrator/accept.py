"""What an accepted draft becomes in the answer, and the rules every verdict obeys; shared by
the sync and async schedules."""
from __future__ import annotations

from orchestrator.types import Step, Verdict


def stop_mismatch(draft: Step, target: Step) -> bool:
    """True when one step ends the answer (EOS) and the other does not.

    Such a pair is never equivalent, whatever its text: accepting a draft that ended with EOS in
    place of a target step that continues would end the answer early, and the reverse would
    run on past the target's own end.
    """
    return (draft.stop_reason == "eos") != (target.stop_reason == "eos")


def stop_verdict(draft: Step, target: Step) -> Verdict:
    return Verdict(False, 0.0, "stop-reason", f"draft {draft.stop_reason} vs target {target.stop_reason}")


def adopt(draft: Step, target: Step, verdict: Verdict | None = None) -> Step:
    """The step to emit for an accepted draft, carrying the verdict that accepted it.

    When the texts are identical the target's own tokens and stop reason are kept (marked as
    the draft's), so later cycles see the tokens the target wrote. The target steps drafted
    after it in the same cycle were conditioned on the draft's tokens, or across tokenizers on
    its re-encoded text; where that re-encoding is not the target's own token sequence (a blank
    line written as two newline tokens, encoded as one) the target may go on differently from
    plain decoding. With a shared tokenizer, token ids pass as they are.
    """
    if draft.text == target.text:
        step = Step(target.text, target.token_ids, target.tokenizer_key, target.stop_reason, "draft")
    else:
        step = Step(draft.text, draft.token_ids, draft.tokenizer_key, draft.stop_reason, "draft")
    if verdict is not None:
        step.verifier, step.score = verdict.verifier, verdict.score
    return step


def mark_rejected(target: Step, drafts: list[Step], verdicts: list[Verdict]) -> Step:
    """The target step emitted after every sibling draft was rejected, with the best one's verdict."""
    if verdicts:
        k = max(range(len(verdicts)), key=lambda i: verdicts[i].score)
        target.verifier, target.score, target.rejected_draft = verdicts[k].verifier, verdicts[k].score, drafts[k].text
    return target
