"""Pure post-processing of keyword masks: union, dilation, degeneracy check."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

BoolMask = npt.NDArray[np.bool_]


def dilate(mask: BoolMask, pixels: int) -> BoolMask:
    """Grow a bool (H, W) mask by ``pixels`` in every direction (square element, max-pool)."""
    if pixels <= 0:
        return mask
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    grown = torch.nn.functional.max_pool2d(t, kernel_size=2 * pixels + 1, stride=1, padding=pixels)
    return grown[0, 0].numpy() > 0


def is_degenerate(mask: BoolMask, min_fraction: float, max_fraction: float) -> str | None:
    """Why a mask is unusable (``"empty"``, ``"too small"``, ``"almost the whole image"``), or None."""
    area = float(mask.mean()) if mask.size else 0.0
    if area == 0.0:
        return "empty"
    if area < min_fraction:
        return f"too small ({area:.5f} < {min_fraction})"
    if area > max_fraction:
        return f"almost the whole image ({area:.3f} > {max_fraction})"
    return None
