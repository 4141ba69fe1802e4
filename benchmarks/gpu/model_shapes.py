"""Model shapes for benchmarks that need no weights: the Qwen2.5 family's published configs,
built offline into random-weight transformers models.

The numbers are those of the Qwen2.5 base models' config.json files (hidden size, layers,
attention and key/value heads, MLP width, vocabulary, tied embeddings). Decode speed depends
only on these shapes and the dtype, never on the weights' values, so a random-weight model
measures the real decode cost without a model hub.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool

    def config(self):
        from transformers import Qwen2Config

        return Qwen2Config(
            hidden_size=self.hidden, num_hidden_layers=self.layers, num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads, intermediate_size=self.intermediate, vocab_size=self.vocab,
            tie_word_embeddings=self.tied, max_position_embeddings=32768, rms_norm_eps=1e-6,
            rope_theta=1000000.0, use_sliding_window=False, bos_token_id=0, eos_token_id=1, pad_token_id=0)

    @property
    def params(self) -> int:
        d, kv = self.hidden, self.kv_heads * (self.hidden // self.heads)
        layer = 2 * d * d + 2 * d * kv + 3 * d * self.intermediate  # q, o; k, v; gate, up, down
        layer += d + 2 * kv + 2 * d  # q/k/v biases, two norms
        embed = self.vocab * d * (1 if self.tied else 2)
        return self.layers * layer + embed + d

    @property
    def params_read_per_token(self) -> int:
        """Parameters one decode step streams from memory: everything but the input embedding
        table (only one row of it is read), which with tied embeddings is the output head."""
        return self.params - (0 if self.tied else self.vocab * self.hidden)


# Qwen2.5 base models (config.json of Qwen/Qwen2.5-{0.5B,1.5B,7B,14B,32B})
QWEN25 = {
    "0.5b": Shape("qwen2.5-0.5b", 896, 24, 14, 2, 4864, 151936, True),
    "1.5b": Shape("qwen2.5-1.5b", 1536, 28, 12, 2, 8960, 151936, True),
    "7b": Shape("qwen2.5-7b", 3584, 28, 28, 4, 18944, 152064, False),
    "14b": Shape("qwen2.5-14b", 5120, 48, 40, 8, 13824, 152064, False),
    "32b": Shape("qwen2.5-32b", 5120, 64, 40, 8, 27648, 152064, False),
}

# The same roles at toy scale, for a CPU smoke run of the GPU benchmark (same code path).
SMOKE = {
    "0.5b": Shape("smoke-0.5b", 64, 2, 4, 2, 128, 2048, True),
    "1.5b": Shape("smoke-1.5b", 64, 3, 4, 2, 160, 2048, True),
    "7b": Shape("smoke-7b", 128, 3, 8, 2, 256, 2048, False),
    "14b": Shape("smoke-14b", 128, 4, 8, 2, 320, 2048, False),
    "32b": Shape("smoke-32b", 160, 4, 8, 2, 384, 2048, False),
}


def random_model(shape: Shape, device: str, dtype, seed: int = 0):
    """A random-weight causal LM of this shape, created directly on `device` (a 32B model
    initialised on the host would take minutes), with sdpa attention."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(shape.config(), dtype=dtype, attn_implementation="sdpa")
    return model.eval()
