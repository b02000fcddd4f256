"""SAM image-encoder attention through ``torch.nn.functional.scaled_dot_product_attention``.

segment-anything's ``Attention.forward`` materializes softmax(q k^T * scale + rel-pos) v
with plain matmuls. :func:`sdpa_attention_forward` computes the same function with SDPA
(fused kernels on GPU), passing the decomposed relative-position term of MViTv2 (as
segment-anything's ``add_decomposed_rel_pos`` builds it) as the additive ``attn_mask``.
SDPA's default scale is head_dim^-0.5, the module's ``scale``. :func:`use_sdpa_attention`
switches every attention block of an image encoder to it, in place.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F


def decomposed_rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                            size: tuple[int, int]) -> torch.Tensor:
    """Additive bias (N, H*W, H*W) of MViTv2's decomposed relative positions for queries q (N, H*W, C)."""
    from segment_anything.modeling.image_encoder import get_rel_pos

    h, w = size
    n, _, dim = q.shape
    r_q = q.reshape(n, h, w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(h, h, rel_pos_h))
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(w, w, rel_pos_w))
    return (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(n, h * w, h * w)


def sdpa_attention_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """Drop-in ``Attention.forward``: x (B, H, W, C) -> (B, H, W, C)."""
    b, h, w, _ = x.shape
    heads = self.num_heads
    qkv = self.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, heads, HW, d)
    q, k, v = qkv.unbind(0)
    bias = None
    if self.use_rel_pos:
        flat_q = q.reshape(b * heads, h * w, -1)
        bias = decomposed_rel_pos_bias(flat_q, self.rel_pos_h, self.rel_pos_w, (h, w))
        bias = bias.reshape(b, heads, h * w, h * w).to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, heads, HW, d)
    out = out.view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return self.proj(out)


def use_sdpa_attention(image_encoder: torch.nn.Module) -> int:
    """Switch every segment-anything ``Attention`` in ``image_encoder`` to SDPA; returns how many."""
    from segment_anything.modeling.image_encoder import Attention

    count = 0
    for module in image_encoder.modules():
        if isinstance(module, Attention):
            module.forward = types.MethodType(sdpa_attention_forward, module)
            count += 1
    return count
