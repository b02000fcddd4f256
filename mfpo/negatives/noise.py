"""MFPO's own rejected image and its global ablation, as constructors (MFPO sec. 3.1 and Table 8).

Both are :func:`mfpo.perturbation.perturb_in_mask` (forward diffusion x_t = sqrt(a_t) x +
sqrt(1 - a_t) eps at the run's ``PerturbationConfig``): ``mfpo`` inside the union of the item's
keyword regions, ``global`` over every pixel ("applying global diffusion noise to the entire image",
MFPO sec. 4's noise-proportion study; also MFPO's fallback when no keyword is located). The noise
of a pixel depends only on the seed, the image size and its position, so ``global`` and ``mfpo``
of one item agree inside the regions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mfpo.perturbation import PerturbationConfig, alpha_bar, perturb_in_mask
from mfpo.regions.masks import union

UInt8Image = npt.NDArray[np.uint8]
BoolMask = npt.NDArray[np.bool_]


def noise_details(perturbation: PerturbationConfig, mask: BoolMask) -> dict[str, Any]:
    """The record's facts of a noised image: timestep, schedule, a_t and the noised area fraction."""
    return {
        "noise_step": perturbation.noise_step,
        "schedule": perturbation.schedule,
        "alpha_bar": alpha_bar(perturbation),
        "model_resolution": perturbation.model_resolution,
        "area_fraction": float(mask.mean()) if mask.size else 0.0,
    }


def noise_in_mask(image: UInt8Image, mask: BoolMask, seed: int, perturbation: PerturbationConfig) -> UInt8Image:
    """``perturb_in_mask`` at the configured a_t, noise grid and resampling compensation; uint8 (H, W, 3)."""
    return perturb_in_mask(image, mask, alpha_bar(perturbation), seed,
                           model_resolution=perturbation.model_resolution,
                           compensate_resampling=perturbation.compensate_resampling)


def global_negative(image: UInt8Image, seed: int, perturbation: PerturbationConfig) -> tuple[
    UInt8Image, BoolMask, dict[str, Any]
]:
    """MFPO's global-noise ablation: diffusion noise on every pixel of uint8 (H, W, 3).

    Returns the rejected image (uint8 (H, W, 3)), its mask (all True, bool (H, W)) and the details.
    """
    mask = np.ones(image.shape[:2], dtype=bool)
    return noise_in_mask(image, mask, seed, perturbation), mask, noise_details(perturbation, mask)


def mfpo_negative(image: UInt8Image, masks: Sequence[BoolMask], seed: int, perturbation: PerturbationConfig) -> tuple[
    UInt8Image, BoolMask, dict[str, Any]
]:
    """MFPO sec. 3.1's m': noise inside the union of the keyword masks (bool (H, W) each); with no mask (or only
    empty ones) the whole image, as the paper does for items whose keywords locate no region (recorded as
    ``details["fallback"] = "global_noise"``). Returns (uint8 (H, W, 3), bool (H, W) mask, details)."""
    h, w = image.shape[:2]
    mask = union(list(masks), h, w)
    fallback = None
    if not mask.any():
        mask = np.ones((h, w), dtype=bool)
        fallback = "global_noise"
    details = noise_details(perturbation, mask) | {"fallback": fallback}
    return noise_in_mask(image, mask, seed, perturbation), mask, details
