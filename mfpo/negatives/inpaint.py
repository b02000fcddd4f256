"""The inpainting seam of AdaViP's object removal (AdaViP eq. 8: c_i = Omega_LaMa(I_w, m_i)).

An :class:`Inpainter` fills the masked pixels of a batch of images; whatever model does it, the
pixels outside each mask come back byte-identical (:func:`composite`), so a candidate differs from
the original only where its object was. Implementations: :class:`mfpo.negatives.fill.FillInpainter`
(classical, CPU, no model) and :class:`mfpo.negatives.diffusers_inpaint.DiffusersInpainter` (a
diffusers inpainting pipeline from a local folder). AdaViP uses Big LaMa; a LaMa-class model can be
added behind the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch

UInt8Image = npt.NDArray[np.uint8]
BoolMask = npt.NDArray[np.bool_]


@runtime_checkable
class Inpainter(Protocol):
    """Removes the masked pixels of each image. ``name`` goes into the records."""

    name: str

    def inpaint(
        self, images: Sequence[UInt8Image], masks: Sequence[BoolMask], seeds: Sequence[int]
    ) -> list[UInt8Image]:
        """One filled image per input, in order: uint8 (H, W, 3) like the image, its mask's pixels (bool (H, W))
        replaced, every other pixel byte-identical. ``seeds`` drive any random draw, one per image, so an
        image's fill does not depend on the rest of the batch."""
        ...


def composite(image: UInt8Image, filled: UInt8Image, mask: BoolMask) -> UInt8Image:
    """uint8 (H, W, 3): ``filled`` inside ``mask`` (bool (H, W)), ``image`` elsewhere (byte-identical)."""
    if filled.shape != image.shape:
        raise ValueError(f"filled image {filled.shape} does not match the image {image.shape}")
    out = image.copy()
    out[mask] = filled[mask]
    return out


def mask_bbox(mask: BoolMask) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1), the half-open bounding rows/columns of a bool (H, W) mask; None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def check_pairs(images: Sequence[UInt8Image], masks: Sequence[BoolMask], seeds: Sequence[int]) -> None:
    """Raise ValueError unless there is one bool (H, W) mask and one seed per uint8 (H, W, 3) image."""
    if not len(images) == len(masks) == len(seeds):
        raise ValueError(f"{len(images)} images, {len(masks)} masks and {len(seeds)} seeds")
    for image, mask in zip(images, masks, strict=True):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"images must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")


def dilate_mask(mask: BoolMask, pixels: int) -> BoolMask:
    """bool (H, W) ``mask`` grown by ``pixels`` in every direction (a (2p+1)^2 square structuring element), as
    :func:`mfpo.segmentation.masks.dilate`, computed on the mask's bounding box plus the margin only and as two
    1-D max-pools (the square element is separable): O(box area x p) instead of O(H W p^2)."""
    box = mask_bbox(mask)
    if pixels <= 0 or box is None:
        return mask.copy()
    h, w = mask.shape
    y0, y1, x0, x1 = max(0, box[0] - pixels), min(h, box[1] + pixels), max(0, box[2] - pixels), min(w, box[3] + pixels)
    window = torch.from_numpy(np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.float32))[None, None]
    k = 2 * pixels + 1
    grown = torch.nn.functional.max_pool2d(window, kernel_size=(1, k), stride=1, padding=(0, pixels))
    grown = torch.nn.functional.max_pool2d(grown, kernel_size=(k, 1), stride=1, padding=(pixels, 0))
    out = np.zeros_like(mask, dtype=bool)
    out[y0:y1, x0:x1] = grown[0, 0].numpy() > 0
    return out
