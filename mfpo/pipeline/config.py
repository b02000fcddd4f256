"""Settings of one generation run: one typed config per stage."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mfpo.config import ComponentConfig
from mfpo.images import ImageLimits
from mfpo.keywords import KeywordConfig
from mfpo.negatives.config import NegativesConfig
from mfpo.perturbation import PerturbationConfig
from mfpo.regions.config import RegionsConfig


class GenerateConfig(ComponentConfig):
    """Everything that decides a rejected image, plus input limits."""

    keywords: KeywordConfig = Field(default_factory=KeywordConfig, description="Keyword stage (sec. 3.1).")
    regions: RegionsConfig = Field(default_factory=RegionsConfig, description="Region stage.")
    perturbation: PerturbationConfig = Field(
        default_factory=PerturbationConfig, description="Diffusion-noise stage."
    )
    negatives: NegativesConfig = Field(
        default_factory=NegativesConfig,
        description="Rejected-image constructors (mfpo, adavip, mdpo, mbpo, global) and their settings; the first "
        "kind's image is the record's rejected_image.",
    )
    limits: ImageLimits = Field(default_factory=ImageLimits, description="Input image limits.")
    seed: int = Field(default=0, ge=0, description="Run seed; each item's noise seed derives from it.")
    png_compress_level: int = Field(
        default=1,
        ge=0,
        le=9,
        description=(
            "zlib level of the rejected-image and mask PNGs (lossless at every level). Noise does not compress: "
            "at 1024^2, level 1 encodes ~2.8x faster than PIL's default 6 for ~15% larger files. "
            "Not part of the output keys (pixels do not depend on it)."
        ),
    )

    def output_options(self) -> dict[str, Any]:
        """The options that decide an item's outputs (hashed into its output keys)."""
        return {
            "keywords": self.keywords.model_dump(mode="json"),
            "regions": self.regions.model_dump(mode="json"),
            "perturbation": self.perturbation.model_dump(mode="json"),
            "seed": self.seed,
            "max_working_pixels": self.limits.max_working_pixels,
            **({"negatives": negatives} if (negatives := self.negatives.output_options()) else {}),
        }
