"""What an accepted draft becomes in the answer, and the rules every verdict obeys; shared by
the sync and async schedules."""
from __future__ import annotations

from orchestrator.types import Step, Verdict


#: what closes a thinking model's reasoning block (Qwen3, DeepSeek-R1): after it comes the answer
THINK_END = "</think>"


def stop_mismatch(draft: Step, target: Step) -> bool:
    """True when one step ends the answer (EOS) and the other does not, or one step closes the
    reasoning block (`</think>`) and the other does not.

    Such a pair is never equivalent, whatever its text: accepting a draft that ended with EOS in
    place of a target step that continues would end the answer early, and the reverse would
    run on past the target's own end. Likewise a draft that closes `</think>` where the target
    goes on reasoning would cut the target's reasoning short, and the reverse would keep reasoning
    where the target starts its answer.
    """
    return ((draft.stop_reason == "eos") != (target.stop_reason == "eos")
            or (THINK_END in draft.text) != (THINK_END in target.text))


def stop_verdict(draft: Step, target: Step) -> Verdict:
    if (draft.stop_reason == "eos") != (target.stop_reason == "eos"):
        return Verdict(False, 0.0, "stop-reason", f"draft {draft.stop_reason} vs target {target.stop_reason}")
    closes = "draft" if THINK_END in draft.text else "target"
    return Verdict(False, 0.0, "stop-reason", f"the {closes} step closes {THINK_END} and the other does not")


def same_tokens(draft: Step, target: Step) -> bool:
    """True when the two steps are the same output: with one tokenizer the same token ids (and
    text), across tokenizers the same text. The exact verifier's rule, the one that keeps lossless
    mode token for token: two models sharing a tokenizer can write the same text with other
    tokens ("." + "\\n\\n" against ".\\n\\n"), and the target rows drafted after such a step were
    conditioned on tokens plain decoding never produces."""
    if draft.tokenizer_key == target.tokenizer_key:
        return draft.token_ids == target.token_ids and draft.text == target.text
    return draft.text == target.text


def adopt(draft: Step, target: Step, verdict: Verdict | None = None) -> Step:
    """The step to emit for an accepted draft, carrying the verdict that accepted it.

    When the texts are identical the target's own tokens and stop reason are kept (marked as
    the draft's), so later cycles see the tokens the target wrote. Under the exact verifier an
    accepted draft with a shared tokenizer has the target's token ids already (`same_tokens`), so
    the target steps drafted after it were conditioned on exactly what plain decoding writes.
    Across tokenizers they were conditioned on its re-encoded text; where that re-encoding is not
    the target's own token sequence (a blank line written as two newline tokens, encoded as one)
    the target may go on differently from plain decoding (README, "Correctness").
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
