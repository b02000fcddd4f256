"""Settings of the segmentation stage: boxes -> masks with segment-anything (SAM)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mfpo.config import ComponentConfig
from mfpo.devices import DtypeName

SamType = Literal["vit_h", "vit_l", "vit_b", "vit_tiny"]

DEFAULT_BATCH_SIZE: dict[str, int] = {"vit_h": 8, "vit_l": 12, "vit_b": 16, "vit_tiny": 16}
"""Images per SAM image-encoder pass when ``batch_size`` is not set (bf16 on one 80 GB GPU)."""


class SamConfig(ComponentConfig):
    """Which SAM, where its checkpoint is, and which masks are kept."""

    checkpoint: str = Field(description="Path of a segment-anything checkpoint (sam_vit_h_4b8939.pth, ...).")
    sam_type: SamType = Field(
        default="vit_h",
        description="Architecture of the checkpoint: vit_h | vit_l | vit_b (official), vit_tiny (`mfpo models tiny`).",
    )
    batch_size: int | None = Field(
        default=None, ge=1, description="Images per image-encoder pass; default per sam_type (vit_h 8 ... vit_b 16)."
    )
    device: str = Field(default="auto", description="torch device: auto (cuda if present) | cpu | cuda | cuda:N.")
    dtype: DtypeName = Field(
        default="auto", description="Autocast dtype: auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16."
    )
    attention: Literal["sdpa", "eager"] = Field(
        default="sdpa",
        description=(
            "Image-encoder attention: sdpa (torch scaled_dot_product_attention, fused kernels on GPU) or "
            "eager (segment-anything's own matmul + softmax). Same function; sdpa is faster."
        ),
    )
    mask_dilation: int = Field(
        default=0, ge=0, le=64, description="Grow each keyword's mask by this many pixels (square structuring element)."
    )
    min_mask_fraction: float = Field(
        default=0.0005, ge=0.0, lt=1.0, description="Reject a keyword mask covering less than this image fraction."
    )
    max_mask_fraction: float = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="Reject a keyword mask covering more than this fraction (almost the whole image: use global).",
    )

    @model_validator(mode="after")
    def _fractions(self) -> SamConfig:
        if self.min_mask_fraction >= self.max_mask_fraction:
            raise ValueError("min_mask_fraction must be below max_mask_fraction")
        return self

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size or DEFAULT_BATCH_SIZE[self.sam_type]
