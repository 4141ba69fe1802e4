"""Embedding verifier: cosine similarity of sentence embeddings >= threshold.

The reference uses all-mpnet-base-v2 at 0.95; here the default is all-MiniLM-L6-v2
("minilm-l6") at 0.97, the threshold at which a 30-question GSM8K run kept the target's final answer
on 28 (docs/verifiers.md; at 0.85 the same questions kept 23).
It is blind to arithmetic ("48/2 = 24" vs "48/2 = 25" ~0.98), so `build_verifier` wraps it
in the numeric guard (verifier/numeric.py) by default.
"""
from __future__ import annotations

import asyncio
import threading

from orchestrator.types import Verdict, VerifyPair
from verifier.kinds import KINDS
from verifier.precheck import prechecked


class EmbeddingVerifier:
    name = "embedding"

    def __init__(self, model_path: str, threshold: float = KINDS["embedding"].threshold, device: str = "cpu",
                 batch_size: int = 64) -> None:
        """`model_path`: a sentence-transformers model directory (callers resolve short names)."""
        from sentence_transformers import SentenceTransformer

        self.model_name = model_path
        self.threshold = float(threshold)
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(model_path), device=device)
        self._lock = threading.Lock()  # one encode at a time on this model

    def similarities(self, drafts: list[str], targets: list[str]) -> list[float]:
        """Cosine similarity of each (draft, target), all texts encoded in one batch."""
        if not drafts:
            return []
        with self._lock:
            emb = self.model.encode(drafts + targets, batch_size=self.batch_size,
                                    normalize_embeddings=True, convert_to_tensor=True,
                                    show_progress_bar=False)
        n = len(drafts)
        return (emb[:n] * emb[n:]).sum(-1).clamp(-1.0, 1.0).tolist()

    async def verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        return await prechecked(pairs, self._verify)

    async def _verify(self, pairs: list[VerifyPair]) -> list[Verdict]:
        sims = await asyncio.to_thread(self.similarities, [p.draft.text for p in pairs],
                                       [p.target.text for p in pairs])
        return [Verdict(s >= self.threshold, float(s), self.name, f"cosine={s:.4f}") for s in sims]
