"""The classical inpainter: a membrane (harmonic) fill of the mask from its border, in numpy.

The fill solves Laplace's equation inside the mask with the known pixels as its boundary values
(the "membrane" interpolant of Perez et al. 2003 with zero guidance field; zero-flux at the image
border): every filled pixel ends as the mean of its four neighbours. It is computed coarse to fine:

1. pull (:func:`pull`): a 2x2 pyramid of the known pixels' weighted means (Gortler et al. 1996's
   pull-push), until a level has no unknown pixel;
2. push: each level's unknown pixels start from the coarser level's value (nearest upsampling);
3. relax (:func:`relax`): ``iterations`` Jacobi sweeps of x_p <- (x_N + x_S + x_E + x_W) / 4 over the
   unknown pixels only, neighbours outside the image replaced by the pixel itself (zero flux).

It is deterministic (no seed), needs no model, and costs O(masked pixels x iterations) per level.
It keeps low frequencies (colour, gradients) and loses texture: a CPU stand-in for AdaViP's LaMa,
not a replacement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from mfpo.negatives.config import FillInpaintConfig
from mfpo.negatives.inpaint import check_pairs, mask_bbox

UInt8Image = npt.NDArray[np.uint8]
BoolMask = npt.NDArray[np.bool_]
FloatImage = npt.NDArray[np.float32]


def pull(values: FloatImage, known: BoolMask) -> tuple[FloatImage, BoolMask]:
    """One pull step: float (h, w, C) and bool (h, w) -> the (ceil(h/2), ceil(w/2)) level.

    A coarse pixel is the mean of the known pixels of its 2x2 block (odd sizes: the last block is smaller);
    it is known when its block has at least one known pixel.
    """
    h, w, c = values.shape
    ph, pw = (h + 1) // 2, (w + 1) // 2
    weights = np.zeros((2 * ph, 2 * pw), dtype=np.float32)
    weights[:h, :w] = known
    sums = np.zeros((2 * ph, 2 * pw, c), dtype=np.float32)
    sums[:h, :w] = values * known[..., None]
    count = weights.reshape(ph, 2, pw, 2).sum(axis=(1, 3))
    total = sums.reshape(ph, 2, pw, 2, c).sum(axis=(1, 3))
    coarse_known = count > 0
    coarse = np.zeros((ph, pw, c), dtype=np.float32)
    coarse[coarse_known] = total[coarse_known] / count[coarse_known][:, None]
    return coarse, coarse_known


def relax(values: FloatImage, known: BoolMask, iterations: int) -> FloatImage:
    """``iterations`` Jacobi sweeps of Laplace's equation over the unknown pixels of float (h, w, C) (in place).

    x_p <- (x_N + x_S + x_E + x_W) / 4 with every unknown pixel updated from the previous sweep's values; a
    neighbour outside the image is the pixel itself (zero flux at the border). Known pixels never change.
    """
    ys, xs = np.nonzero(~known)
    if ys.size == 0 or iterations <= 0:
        return values
    h, w = known.shape
    north, south = np.maximum(ys - 1, 0), np.minimum(ys + 1, h - 1)
    west, east = np.maximum(xs - 1, 0), np.minimum(xs + 1, w - 1)
    for _ in range(iterations):
        values[ys, xs] = (values[north, xs] + values[south, xs] + values[ys, west] + values[ys, east]) * 0.25
    return values


def membrane_fill(values: FloatImage, known: BoolMask, iterations: int) -> FloatImage:
    """Fill the unknown pixels of float (h, w, C): pull to a fully known level, then push + relax back up.

    ``known`` must have at least one True pixel. Returns float32 (h, w, C); known pixels unchanged.
    """
    if known.all():
        return values
    if not known.any():
        raise ValueError("nothing to fill from: every pixel is masked")
    coarse, coarse_known = pull(values, known)
    coarse = membrane_fill(coarse, coarse_known, iterations)
    h, w = known.shape
    up = coarse.repeat(2, axis=0).repeat(2, axis=1)[:h, :w]
    out = values.copy()
    out[~known] = up[~known]
    return relax(out, known, iterations)


def fill_image(image: UInt8Image, mask: BoolMask, iterations: int) -> UInt8Image:
    """uint8 (H, W, 3) with the pixels of bool (H, W) ``mask`` filled by :func:`membrane_fill`.

    Works on the mask's bounding box grown by one pixel (the ring of known pixels that bounds the fill);
    pixels outside the mask are byte-identical. A mask covering the whole image cannot be filled from
    anything: ValueError.
    """
    box = mask_bbox(mask)
    if box is None:
        return image.copy()
    h, w = mask.shape
    y0, y1, x0, x1 = max(0, box[0] - 1), min(h, box[1] + 1), max(0, box[2] - 1), min(w, box[3] + 1)
    window = mask[y0:y1, x0:x1]
    filled = membrane_fill(image[y0:y1, x0:x1].astype(np.float32), ~window, iterations)
    out = image.copy()
    region = out[y0:y1, x0:x1]
    region[window] = np.clip(np.rint(filled[window]), 0, 255).astype(np.uint8)
    return out


class FillInpainter:
    """:class:`~mfpo.negatives.inpaint.Inpainter` by :func:`fill_image` (CPU, no model, seeds unused)."""

    name = "fill"

    def __init__(self, config: FillInpaintConfig | None = None) -> None:
        self.config = config or FillInpaintConfig()

    def inpaint(
        self, images: Sequence[UInt8Image], masks: Sequence[BoolMask], seeds: Sequence[int]
    ) -> list[UInt8Image]:
        check_pairs(images, masks, seeds)
        return [fill_image(im, m, self.config.iterations) for im, m in zip(images, masks, strict=True)]
