"""Per-process resources of the stages (models, providers), built once and reused."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from mfpo.keywords.vectors import PhraseEmbedder, get_embedder
from mfpo.regions.annotations import AnnotationProvider
from mfpo.regions.base import RegionProvider
from mfpo.regions.config import RegionsConfig
from mfpo.regions.matching import match_keyword
from mfpo.regions.random_region import RandomProvider
from mfpo.regions.whole_image import GlobalProvider


@dataclass
class StageResources:
    """What the stages need besides the item: the phrase embedder and region providers."""

    embedder: PhraseEmbedder
    providers: list[RegionProvider]
    fallback_to_global: bool
    region_batch_size: int = 64
    """Items per provider-chain call in the regions stage: the models' batch when they are loaded."""
    detector: RegionProvider | None = None
    """The loaded grounding + SAM provider (None without models): AdaViP's extra candidate objects."""


def build_providers(
    config: RegionsConfig, embedder: PhraseEmbedder, model_providers: list[RegionProvider] | None = None
) -> tuple[list[RegionProvider], bool]:
    """The provider chain for a region mode, and whether it falls back to the whole image.

    annotations -> [annotations] + global fallback; grounded -> [grounded] + global fallback;
    global -> [global]; random -> [random]; auto -> [annotations, *model_providers] + global fallback.
    """
    annotations = AnnotationProvider(
        partial(match_keyword, embedder=embedder, threshold=config.match_threshold)
    )
    if config.mode == "annotations":
        return [annotations], True
    if config.mode == "global":
        return [GlobalProvider()], False
    if config.mode == "random":
        return [RandomProvider(config.random_fraction, config.random_aspect_range)], False
    if config.mode == "grounded":
        return [*(model_providers or [])], True
    return [annotations, *(model_providers or [])], True


def build_resources(config: RegionsConfig) -> StageResources:
    """Load the embedder and any grounding + SAM models (each once per process); build the chain."""
    embedder = get_embedder()
    models: list[RegionProvider] = []
    batch = 64
    if config.grounding is not None and config.sam is not None and config.mode in ("grounded", "auto"):
        from mfpo.regions.grounded import get_grounded_provider  # torch + transformers: only where models run

        models.append(get_grounded_provider(config.grounding, config.sam))
        batch = max(config.sam.effective_batch_size, config.grounding.batch_size)
    providers, fallback = build_providers(config, embedder, models)
    return StageResources(embedder=embedder, providers=providers, fallback_to_global=fallback,
                          region_batch_size=batch, detector=models[0] if models else None)
