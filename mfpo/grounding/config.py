"""Settings of the grounding stage: keyword phrases -> boxes with a zero-shot detector."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mfpo.config import ComponentConfig
from mfpo.devices import DtypeName

GroundingArchitecture = Literal["auto", "grounding_dino", "owlv2"]


class GroundingConfig(ComponentConfig):
    """Which detector, where its weights are, and how boxes are kept."""

    model_path: str = Field(
        description=(
            "A transformers model folder (config.json, weights, processor files) of GroundingDINO "
            "(e.g. IDEA-Research/grounding-dino-tiny) or OWLv2 (google/owlv2-base-patch16-ensemble); "
            "a hub id works only where the deployment has network."
        )
    )
    architecture: GroundingArchitecture = Field(
        default="auto", description="grounding_dino | owlv2 | auto (read model_type from config.json)."
    )
    box_threshold: float = Field(
        default=0.35,
        ge=0.0,
        le=1.0,
        description=(
            "Minimum detection score of a box (GroundingDINO: max token probability of the query, "
            "its authors' default 0.35; OWLv2: class probability, 0.1 is usual)."
        ),
    )
    text_threshold: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="GroundingDINO only: minimum probability of the keyword's tokens for the box to name it.",
    )
    nms_iou: float = Field(
        default=0.5, gt=0.0, le=1.0, description="IoU above which a lower-scored box of the same keyword is dropped."
    )
    max_boxes_per_keyword: int = Field(default=3, ge=1, description="Best boxes kept per keyword after NMS.")
    batch_size: int = Field(default=8, ge=1, description="Images per detector forward pass.")
    device: str = Field(default="auto", description="torch device: auto (cuda if present) | cpu | cuda | cuda:N.")
    dtype: DtypeName = Field(
        default="auto", description="Autocast dtype: auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16."
    )
