"""The SAM architectures a checkpoint can be loaded into, by ``sam_type``.

``vit_h`` / ``vit_l`` / ``vit_b`` are segment-anything's own (``sam_model_registry``); ``vit_tiny``
is ours: the real input geometry with tiny widths, the size of the random-weight checkpoints
``mfpo models tiny`` writes for offline tests and smoke runs (loaded through the same code as real
weights). Production loading builds an architecture here and never imports test builders.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

SAM_TYPES = ("vit_h", "vit_l", "vit_b", "vit_tiny")
EMBED_DIM_TO_TYPE = {1280: "vit_h", 1024: "vit_l", 768: "vit_b", 32: "vit_tiny"}


class UnknownSamType(ValueError):
    """``sam_type`` names no architecture."""


def build_sam_architecture(sam_type: str) -> Any:
    """An untrained ``segment_anything.modeling.Sam`` of the given type (CPU, float32, eval mode)."""
    if sam_type == "vit_tiny":
        return build_vit_tiny()
    from segment_anything import sam_model_registry

    if sam_type not in ("vit_h", "vit_l", "vit_b"):
        raise UnknownSamType(f"unknown sam_type {sam_type!r}; valid: {', '.join(SAM_TYPES)}")
    return sam_model_registry[sam_type](checkpoint=None)


def build_vit_tiny() -> Any:
    """An untrained tiny ``segment_anything.modeling.Sam`` (CPU, float32, eval mode).

    Built like ``segment_anything.build_sam._build_sam`` with the real input geometry
    (1024 px input, 16 px patches, a 64x64 image embedding) but tiny widths: a 2-block
    ViT (embed dim 32, 2 heads, window 14, block 1 global) whose neck gives 32 channels,
    a 32-dim prompt encoder, and a 32-dim two-way transformer (2 layers, 2 heads, MLP 64)
    in the mask decoder with 3 multimask outputs. About 0.24 M parameters.
    """
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    prompt_embed_dim, image_size, patch_size = 32, 1024, 16
    embedding_size = image_size // patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=32,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=(1,),
            window_size=14,
            out_chans=prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_embed_dim, mlp_dim=64, num_heads=2),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


