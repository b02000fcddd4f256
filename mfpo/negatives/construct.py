"""One entry point for the stage graph: a batch of requests -> one kind's rejected images.

    results = construct_negatives("adavip", requests, config.negatives, config.perturbation, detector=grounded)

:func:`check_request` is the cheap per-item validation (no model): call it item by item first, so one
bad item fails alone with its :class:`~mfpo.stages.chunk.ItemError` and the rest go to the models as
one batch. :func:`construct_negatives` raises ``ItemError`` (stage ``negatives``) for an item it cannot
serve; other exceptions are infrastructure (a model that cannot load, CUDA out of memory) and
propagate. Models are loaded once per process (:mod:`mfpo.negatives.models`).

========  =====================  ===========================  ==============================================
kind      needs                  image / mask                  cost (per item)
========  =====================  ===========================  ==============================================
mfpo      regions                input size / union of masks   numpy noise, CPU
global    -                      input size / all True         numpy noise, CPU
mdpo      -                      output_size square / None     one bilinear resize, CPU
adavip    regions (+ detector),  input size / removed object   one inpaint + one CLIP image pass per
          chosen, CLIP                                         candidate (GPU with the diffusers inpainter)
mbpo      question (+ chosen),   policy's view (S, S) / None   ``steps`` vision-tower fwd+bwd + one greedy
          the policy                                           generation (GPU)
========  =====================  ===========================  ==============================================
"""

from __future__ import annotations

from collections.abc import Sequence

from mfpo.negatives.base import NegativeRequest, NegativeResult, check_image
from mfpo.negatives.config import NegativeKind, NegativesConfig
from mfpo.perturbation import PerturbationConfig
from mfpo.regions.base import RegionProvider

MODEL_KINDS: frozenset[str] = frozenset({"adavip", "mbpo"})
"""Kinds that run models (the GPU queue when the deployment has one); the others are numpy on the CPU."""


def check_request(kind: NegativeKind, request: NegativeRequest, config: NegativesConfig) -> None:
    """Raise :class:`~mfpo.stages.chunk.ItemError` (stage ``negatives``) when ``kind`` cannot serve ``request``
    (a malformed image or mask, an empty chosen answer for adavip, an empty question for mbpo)."""
    if kind == "adavip":
        from mfpo.negatives.adavip import check_adavip_request

        check_adavip_request(request)
    elif kind == "mbpo":
        from mfpo.negatives.mbpo import check_mbpo_request

        check_mbpo_request(request, config.mbpo)
    else:
        check_image(request)


def construct_negatives(
    kind: NegativeKind,
    requests: Sequence[NegativeRequest],
    config: NegativesConfig,
    perturbation: PerturbationConfig,
    detector: RegionProvider | None = None,
) -> list[NegativeResult]:
    """``kind``'s rejected image (and, for mbpo, response) of each request, in order.

    ``perturbation``: the run's diffusion-noise settings (mfpo, global, and adavip's global-noise fallback);
    ``detector``: the loaded grounded provider (``get_grounded_provider(regions.grounding, regions.sam)``),
    needed only by adavip with ``candidates="regions+detector"``.
    """
    for request in requests:
        check_request(kind, request, config)
    if kind == "mfpo":
        from mfpo.negatives.noise import mfpo_negative

        out = []
        for r in requests:
            image, mask, details = mfpo_negative(r.image, [g.mask for g in r.regions], r.seed, perturbation)
            out.append(NegativeResult(kind="mfpo", image=image, mask=mask, fallback=details.pop("fallback"),
                                      details=details))
        return out
    if kind == "global":
        from mfpo.negatives.noise import global_negative

        results = []
        for r in requests:
            image, mask, details = global_negative(r.image, r.seed, perturbation)
            results.append(NegativeResult(kind="global", image=image, mask=mask, details=details))
        return results
    if kind == "mdpo":
        from mfpo.negatives.mdpo import mdpo_negative

        crops = []
        for r in requests:
            image, details = mdpo_negative(r.image, r.seed, config.mdpo)
            crops.append(NegativeResult(kind="mdpo", image=image, fallback=details.pop("fallback"), details=details))
        return crops
    if kind == "adavip":
        from mfpo.negatives.adavip import adavip_negatives
        from mfpo.negatives.models import get_clip_scorer, get_inpainter

        if config.adavip.clip is None:
            raise ValueError("negatives kind 'adavip' needs a CLIP model: set negatives.adavip.clip.model_path")
        return adavip_negatives(requests, config.adavip, get_inpainter(config.adavip),
                                get_clip_scorer(config.adavip.clip), perturbation, detector)
    if kind == "mbpo":
        from mfpo.negatives.mbpo import mbpo_negatives
        from mfpo.negatives.models import get_attacker

        if config.mbpo.model_path is None:
            raise ValueError("negatives kind 'mbpo' needs the policy model: set negatives.mbpo.model_path")
        return mbpo_negatives(requests, config.mbpo, get_attacker(config.mbpo))
    raise ValueError(f"unknown negatives kind {kind!r}")
