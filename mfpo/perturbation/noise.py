"""Pure numeric core of the perturbation: masked forward diffusion on 8-bit images.

Pixel space: 8-bit RGB values v in {0..255} are mapped to x = v / 127.5 - 1 in [-1, 1]
(the space DDPM-family image models are trained in, Ho et al. 2020 section 4), noised
there, clamped to [-1, 1] and mapped back with round((x + 1) * 127.5). Pixels outside
the mask are copied from the input, so they are byte-identical.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

UInt8Image = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]
BoolMask = npt.NDArray[np.bool_]


def to_model_space(image: UInt8Image) -> FloatArray:
    """uint8 (H, W, C) in [0, 255] -> float32 (H, W, C) in [-1, 1]: x = v / 127.5 - 1."""
    return image.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def from_model_space(x: FloatArray) -> UInt8Image:
    """float (H, W, C) -> uint8: clamp to [-1, 1], then round((x + 1) * 127.5)."""
    clamped = np.clip(x, -1.0, 1.0)
    return np.rint((clamped + 1.0) * 127.5).astype(np.uint8)


def sample_noise(shape: tuple[int, ...], seed: int) -> FloatArray:
    """eps ~ N(0, I) of ``shape`` as float32, from numpy's PCG64 seeded with ``seed``.

    numpy's Generator streams are stable across platforms and versions, so the same
    seed gives the same bytes everywhere.
    """
    return np.random.Generator(np.random.PCG64(seed)).standard_normal(shape, dtype=np.float32)


def forward_diffuse(x: FloatArray, alpha_bar: float, eps: FloatArray) -> FloatArray:
    """x_t = sqrt(a_t) * x + sqrt(1 - a_t) * eps (MFPO section 3.1; DDPM eq. 4).

    ``x`` and ``eps`` have the same shape; returns float32 of that shape.
    """
    if not 0.0 < alpha_bar <= 1.0:
        raise ValueError(f"alpha_bar must be in (0, 1], got {alpha_bar}")
    a = np.float32(np.sqrt(alpha_bar))
    b = np.float32(np.sqrt(1.0 - alpha_bar))
    return (a * x + b * eps).astype(np.float32)


def perturb_in_mask(image: UInt8Image, mask: BoolMask, alpha_bar: float, seed: int) -> UInt8Image:
    """The rejected image m' of MFPO section 3.1: diffusion noise inside ``mask`` only.

    image: uint8 (H, W, 3); mask: bool (H, W). eps is drawn for the whole image from
    ``seed`` (so a pixel's noise does not depend on the mask's shape) and applied where
    ``mask`` is True. Returns a new uint8 (H, W, 3); pixels outside the mask are the
    input's bytes.
    """
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"image must be uint8 (H, W, C), got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image {image.shape[:2]}")
    eps = sample_noise(image.shape, seed)
    out = image.copy()
    if not mask.any():
        return out
    selected = mask.astype(bool)
    noised = forward_diffuse(to_model_space(image[selected]), alpha_bar, eps[selected])
    out[selected] = from_model_space(noised)
    return out
