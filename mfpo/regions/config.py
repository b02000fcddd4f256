"""Settings of the region stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mfpo.config import ComponentConfig

RegionMode = Literal["annotations", "global", "random", "auto"]


class RegionsConfig(ComponentConfig):
    """Which providers map keywords to regions, and their options."""

    mode: RegionMode = Field(
        default="auto",
        description=(
            "annotations: keywords matched to the item's labelled boxes/polygons; global: the whole "
            "image; random: a random rectangle covering random_fraction of the image (the paper's "
            "ablation); auto: annotations when the item has them, then any model-based provider "
            "configured, then global. Every mode except global and random falls back to global "
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
