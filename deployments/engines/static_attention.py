"""Attention over the static KV cache (deployments/engines/static_decode.py): the model's
attention routed through one function that writes this forward's keys and values into
preallocated cache slots and attends over the whole cache under the caller's mask."""
from __future__ import annotations

import threading

import torch

ATTENTION = "lookahead_static"


def _static_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Writes this forward's keys/values into the static cache, then attends over the whole
    cache under the caller's [B, 1, Q, L] boolean mask. Without a static cache in the kwargs
    (the dynamic path on the same model) it is plain sdpa."""
    layers = kwargs.pop("lookahead_kv", None)
    slots = kwargs.pop("lookahead_slots", None)
    if layers is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    k_cache, v_cache = layers[module.layer_idx]
    k_cache.index_copy_(2, slots, key.to(k_cache.dtype))
    v_cache.index_copy_(2, slots, value.to(v_cache.dtype))
    b, h, q, d = query.shape
    hkv = k_cache.shape[1]
    g = h // hkv
    # Grouped-query attention without repeating the cache: the g query heads of one kv head
    # become g*q query rows (sdpa's own GQA path falls back to the slow kernel under a mask).
    qg = query.reshape(b, hkv, g * q, d)
    mask = attention_mask.unsqueeze(2).expand(b, 1, g, q, attention_mask.shape[-1]).reshape(b, 1, g * q, -1)
    out = torch.nn.functional.scaled_dot_product_attention(qg, k_cache, v_cache, attn_mask=mask, scale=scaling)
    return out.reshape(b, h, q, d).transpose(1, 2).contiguous(), None


_install_lock = threading.Lock()


def install_static_attention(model) -> None:
    """Route the model's attention through `_static_attention` (sdpa unless a static cache is passed)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    with _install_lock:
        current = model.config._attn_implementation
        if current == ATTENTION:
            return
        if current != "sdpa":
            raise ValueError(f"static decoding needs a model loaded with sdpa attention, not {current!r}")
        AttentionInterface.register(ATTENTION, _static_attention)
        # the dynamic path still builds its masks the sdpa way
        AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
        model.set_attn_implementation(ATTENTION)

