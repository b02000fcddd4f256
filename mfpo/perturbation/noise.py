"""Pure numeric core of the perturbation: masked forward diffusion on 8-bit images.

Pixel space: 8-bit RGB values v in {0..255} are mapped to x = v / 127.5 - 1 in [-1, 1]
(the space DDPM-family image models are trained in, Ho et al. 2020 section 4), noised
there, clamped to [-1, 1] and mapped back with round((x + 1) * 127.5). Pixels outside
the mask are copied from the input, so they are byte-identical.
"""

from __future__ import annotations

from functools import lru_cache

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


def noise_field_shape(height: int, width: int, model_resolution: int | None) -> tuple[int, int]:
    """(h_n, w_n): the grid eps is drawn on, the image's size as the model's processor sees it.

    LLaVA-1.5's CLIP processor resizes the shorter side to ``model_resolution`` (336) and
    center-crops; so the grid has the shorter side ``model_resolution`` and the image's
    aspect ratio: h_n = round(H * s), w_n = round(W * s), s = model_resolution / min(H, W).
    An image already at or below that size (s >= 1), or ``model_resolution=None``, keeps one
    noise value per pixel (h_n, w_n) = (H, W).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if model_resolution is None:
        return height, width
    if model_resolution < 1:
        raise ValueError(f"model_resolution must be >= 1, got {model_resolution}")
    scale = model_resolution / min(height, width)
    if scale >= 1.0:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def nearest_index(coords: npt.NDArray[np.int64], size: int, field_size: int) -> npt.NDArray[np.int64]:
    """Nearest-neighbour upsampling index: pixel c of ``size`` -> cell floor(c * field_size / size).

    Every cell covers a run of floor or ceil(size / field_size) consecutive pixels (no
    smoothing: the pixels of one cell share its noise value exactly).
    """
    return (coords.astype(np.int64) * field_size) // size


@lru_cache(maxsize=256)
def resampling_gain(length: int, target: int, field_length: int) -> float:
    """Share of the noise variance that survives the processor's resize along one axis.

    Block noise (``field_length`` values upsampled by :func:`nearest_index` to ``length``
    pixels) is resized to ``target`` pixels with PIL's bicubic filter, as LLaVA's CLIP
    processor resizes images; returns var(resized) / var(field), measured on 256 rows of a
    fixed-seed N(0, 1) field (deterministic, +-0.5%). Exactly 1 when ``length == target``
    (PIL does not filter a same-size resize). Bicubic resampling is a low-pass filter even
    at the target's own sampling rate: a factor-2 downscale keeps ~0.76 per axis.
    """
    if length == target:
        return 1.0
    from PIL import Image

    rows = 256
    field = np.random.Generator(np.random.PCG64(0)).standard_normal((rows, field_length), dtype=np.float32)
    upsampled = np.ascontiguousarray(field[:, nearest_index(np.arange(length), length, field_length)])
    resized = np.asarray(Image.fromarray(upsampled, mode="F").resize((target, rows), Image.Resampling.BICUBIC))
    return float(resized.var() / field.var())


def noise_gain(height: int, width: int, model_resolution: int | None) -> float:
    """Amplitude factor 1 / sqrt(g_h g_w) that gives the model's input unit-variance noise.

    g_h, g_w: :func:`resampling_gain` of each axis for the processor's resize (shorter side
    to ``model_resolution``, aspect kept). 1 for ``model_resolution=None`` and for an image
    not larger than the model's input (the processor then upsamples; we do not compensate).
    """
    if model_resolution is None:
        return 1.0
    h_n, w_n = noise_field_shape(height, width, model_resolution)
    scale = model_resolution / min(height, width)
    if scale >= 1.0:
        return 1.0  # at or below the model's size: noised per pixel, as DDPM writes it
    target_h, target_w = max(1, round(height * scale)), max(1, round(width * scale))
    gain = resampling_gain(height, target_h, h_n) * resampling_gain(width, target_w, w_n)
    return 1.0 / float(np.sqrt(gain))


def perturb_in_mask(
    image: UInt8Image,
    mask: BoolMask,
    alpha_bar: float,
    seed: int,
    *,
    model_resolution: int | None = 336,
    compensate_resampling: bool = True,
    chunk_pixels: int = 1 << 19,
) -> UInt8Image:
    """The rejected image m' of MFPO section 3.1: diffusion noise inside ``mask`` only.

    image: uint8 (H, W, 3); mask: bool (H, W). Returns a new uint8 (H, W, 3); pixels
    outside the mask are the input's bytes.

    m' = sqrt(a_t) m + sqrt(1 - a_t) eps (DDPM eq. 4) with eps drawn at the resolution the
    model sees (ours; the paper does not say at which resolution): eps ~ N(0, I) of shape
    (h_n, w_n, C) from ``seed`` (:func:`noise_field_shape`, default 336 = LLaVA-1.5's input),
    upsampled to (H, W) by nearest neighbour (:func:`nearest_index`). Drawn per native pixel,
    the model's downscaling would average the noise of ~(H/336)^2 pixels into one input
    pixel and a 2048 px photo would see a far weaker corruption than a 336 px one; drawn per
    model pixel, every source resolution gives the model about the same t. The processor's
    bicubic resize still low-passes block noise (a factor-2 downscale keeps ~58% of its
    variance, a same-size "resize" all of it), so with ``compensate_resampling`` eps is scaled
    by :func:`noise_gain` and the model's input carries noise of the DDPM variance 1 - a_t.
    ``model_resolution=None`` draws one value per native pixel (the earlier behaviour).

    Memory: the full-resolution noise is never materialised. Masked pixels are processed in
    row bands of about ``chunk_pixels`` pixels, each indexing the small (h_n, w_n) field,
    so the extra memory is O(h_n * w_n + chunk_pixels), whatever H * W. A pixel's noise
    depends only on the seed, the image size and its position, not on the mask.
    """
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"image must be uint8 (H, W, C), got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image {image.shape[:2]}")
    height, width, channels = image.shape
    out = image.copy()
    if not mask.any():
        return out
    h_n, w_n = noise_field_shape(height, width, model_resolution)
    eps = sample_noise((h_n, w_n, channels), seed)
    if compensate_resampling:
        eps *= np.float32(noise_gain(height, width, model_resolution))
    rows_per_chunk = max(1, chunk_pixels // width)
    for top in range(0, height, rows_per_chunk):
        band = np.asarray(mask[top : top + rows_per_chunk], dtype=bool)
        ys, xs = np.nonzero(band)
        if len(ys) == 0:
            continue
        ys = ys + top
        noise = eps[nearest_index(ys, height, h_n), nearest_index(xs, width, w_n)]
        noised = forward_diffuse(to_model_space(image[ys, xs]), alpha_bar, noise)
        out[ys, xs] = from_model_space(noised)
    return out
