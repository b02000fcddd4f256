"""Rejected-image constructors: MFPO's noise and its siblings' negatives, as batched, seeded functions.

- :mod:`mfpo.negatives.noise`: ``mfpo`` (diffusion noise in the keyword regions, MFPO sec. 3.1) and
  ``global`` (the whole image, MFPO's ablation);
- :mod:`mfpo.negatives.mdpo`: mDPO's random resized crop, as the authors' trainer makes it;
- :mod:`mfpo.negatives.adavip`: AdaViP's object removal (inpainting, :mod:`~mfpo.negatives.inpaint`)
  and CLIP choice (eq. 9, :mod:`~mfpo.negatives.clip_score`);
- :mod:`mfpo.negatives.mbpo`: MBPO's PGD-attacked image and the policy's answer on it;
- :mod:`mfpo.negatives.construct`: one entry point per kind for the stage graph;
  :mod:`mfpo.negatives.models`: the models, loaded once per process; :mod:`mfpo.negatives.config`: settings.

Submodules import torch, diffusers and transformers models only when used.
"""

from mfpo.negatives.base import NegativeRequest, NegativeResult, negatives_error
from mfpo.negatives.config import (
    NEGATIVE_KINDS,
    AdavipConfig,
    ClipScoreConfig,
    DiffusersInpaintConfig,
    FillInpaintConfig,
    MbpoConfig,
    MdpoConfig,
    NegativeKind,
    NegativesConfig,
)
from mfpo.negatives.construct import MODEL_KINDS, check_request, construct_negatives

__all__ = [
    "MODEL_KINDS",
    "NEGATIVE_KINDS",
    "AdavipConfig",
    "ClipScoreConfig",
    "DiffusersInpaintConfig",
    "FillInpaintConfig",
    "MbpoConfig",
    "MdpoConfig",
    "NegativeKind",
    "NegativeRequest",
    "NegativeResult",
    "NegativesConfig",
    "check_request",
    "construct_negatives",
    "negatives_error",
]
