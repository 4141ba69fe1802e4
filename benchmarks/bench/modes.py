"""What one benchmarked configuration is: ar, sd (K tokens), lr (g, W) or lr+sd (g, W, K).

Speculation budget, the common currency of the equal-budget sweep: the token positions the
target evaluates speculatively per forward pass, beyond the one position plain decoding
evaluates. sd with K proposed tokens: K. lr at depth g: g (the batch of g + 1 rows holds g
speculative rows). lr+sd: (g + 1) * (K + 1) - 1 (every row also verifies K tokens).
Width W adds draft work (g * W drafted steps per cycle) and verifier work, but no target
positions: it is reported beside the budget, not in it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from orchestrator.lookahead import LookaheadParams
from orchestrator.modes import Mode

#: the deepest g `depth: auto` may choose (the core's default)
AUTO_MAX_DEPTH = LookaheadParams.max_depth


@dataclass(frozen=True)
class ModeSpec:
    name: str
    lr: bool = False
    sd_tokens: int = 0  # K; 0 = no token-level speculation
    depth: int | str = 0  # g (lr only), or "auto": the adaptive policy picks g = 0..AUTO_MAX_DEPTH per cycle
    width: int = 1  # W (lr only)
    base: str | None = None  # the mode whose target this one speculates over (lr -> ar, lr+sd -> sd)
    verifier: str | None = None  # lr only: this configuration's verifier (None: the run's --verifier)

    @property
    def mode(self) -> Mode:
        """The request mode this configuration runs: steps when lr, tokens when K > 0."""
        return Mode(steps=self.lr, tokens=self.sd_tokens > 0)

    @property
    def target_name(self) -> str:
        """The calibration name of this mode's target engine."""
        return "target+ngram" if self.sd_tokens else "target"

    @property
    def auto(self) -> bool:
        return self.depth == "auto"

    @property
    def depths(self) -> list[int]:
        """The fixed g this configuration runs at, or every g its policy may choose."""
        return list(range(1, AUTO_MAX_DEPTH + 1)) if self.auto else [int(self.depth)]

    @property
    def max_batch(self) -> int:
        """The most target rows one call of this configuration can hold."""
        return max(self.depths) + 1 if self.lr else 1

    @property
    def budget(self) -> int:
        if not self.lr:
            return self.sd_tokens
        return (max(self.depths) + 1) * (self.sd_tokens + 1) - 1


def main_specs(modes: list[str], depth: int | str, width: int, sd_tokens: int,
               verifiers: list[str] | None = None) -> list[ModeSpec]:
    """The four named modes of `lookahead bench run --modes`; with `verifiers` (`--verifiers a,b`),
    each lr mode once per verifier, named "lr[a]", "lr[b]", so one run compares them on the
    same questions."""
    table = {
        "ar": ModeSpec("ar"),
        "sd": ModeSpec("sd", sd_tokens=sd_tokens),
        "lr": ModeSpec("lr", lr=True, depth=depth, width=width, base="ar"),
        "lr+sd": ModeSpec("lr+sd", lr=True, sd_tokens=sd_tokens, depth=depth, width=width, base="sd"),
    }
    unknown = [m for m in modes if m not in table]
    if unknown:
        raise ValueError(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(table)}")
    out = []
    for m in modes:
        spec = table[m]
        if spec.lr and verifiers:
            out += [replace(spec, name=f"{m}[{v}]", verifier=v) for v in verifiers]
        else:
            out.append(spec)
    return out
