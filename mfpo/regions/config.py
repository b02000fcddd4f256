"""Settings of the region stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mfpo.config import ComponentConfig
from mfpo.grounding.config import GroundingConfig
from mfpo.segmentation.config import SamConfig

RegionMode = Literal["annotations", "grounded", "global", "random", "auto"]


class RegionsConfig(ComponentConfig):
    """Which providers map keywords to regions, and their options."""

    mode: RegionMode = Field(
        default="auto",
        description=(
            "annotations: keywords matched to the item's labelled boxes/polygons; global: the whole "
            "image; random: a random rectangle covering random_fraction of the image (the paper's "
            "ablation); grounded: grounding model boxes -> SAM masks (needs grounding and sam); auto: "
            "annotations when the item has them, then grounded when models are configured, then global. "
            "Every mode except global and random falls back to global "
            "when no region is found, recorded as perturbation.fallback = true."
        ),
    )
    random_fraction: float = Field(
        default=0.2, gt=0.0, le=1.0, description="Area fraction of the random region (mode=random)."
    )
    random_aspect_range: tuple[float, float] = Field(
        default=(0.5, 2.0),
        description="Range of width/height ratios the random rectangle's shape is drawn from (log-uniform).",
    )
    match_threshold: float = Field(
        default=0.6,
        ge=-1.0,
        le=1.0,
        description=(
            "Cosine similarity of MiniLM phrase embeddings above which a keyword names an annotation "
            "label, when neither lemma nor synonym match."
        ),
    )
    grounding: GroundingConfig | None = Field(
        default=None, description="Zero-shot detector for the grounded provider (None: not configured)."
    )
    sam: SamConfig | None = Field(default=None, description="SAM for the grounded provider (None: not configured).")

    @property
    def models_configured(self) -> bool:
        return self.grounding is not None and self.sam is not None

    @model_validator(mode="after")
    def _grounded_needs_models(self) -> RegionsConfig:
        if self.mode == "grounded" and not self.models_configured:
            raise ValueError("regions mode 'grounded' needs both a grounding model and a SAM checkpoint")
        if (self.grounding is None) != (self.sam is None):
            raise ValueError("the grounded provider needs both 'grounding' and 'sam' settings, not one of them")
        return self
