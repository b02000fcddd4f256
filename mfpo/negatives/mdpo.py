"""mDPO's rejected image: a random resized crop of what the model sees (Wang et al. 2024, luka-group/mDPO).

What the authors' code does (commit ec316ce8, the only corruption of the image anywhere in it):

- ``mdpo_trainer.py`` ``concatenated_forward`` (lines 71-80) calls the model a third time with the chosen
  answer, the same image batch and ``mask_visual_tokens=True``: the "imageless" / conditional rejected
  sample (chosen answer, corrupted image); nothing else is done to the image there.
- ``bunny/modeling_bunny_phi.py`` ``mDPOBunnyPhiForCausalLM.forward`` (lines 2326-2327): with
  ``mask_visual_tokens`` the images go through ``crop_images`` (lines 2358-2364)::

      resize_cropper = v2.RandomResizedCrop(size=image.size()[-2:], scale=(0.01, 0.2))
      image = resize_cropper(image.squeeze(0)).unsqueeze(0)

  i.e. torchvision's RandomResizedCrop with its defaults otherwise (ratio (3/4, 4/3), bilinear,
  antialias=True), resized back to the image's own size, drawn from torch's global RNG.
- the image it crops is the processed one (``bunny/data_collator_bunny_phi.py`` line 96 calls
  ``process_images``, ``bunny/modeling_bunny_phi.py`` lines 2291-2300: when the model config says
  ``image_aspect_ratio='pad'``, as Bunny and LLaVA-1.5 train, ``expand2square`` with
  ``int(255 * image_mean)``; then the SigLIP processor's 384x384 bicubic resize), so the crop's
  proportions are relative to the padded square at the model's resolution (``frame="pad_square"``;
  without 'pad' the processor resizes the image as it is: ``frame="native"``).

This module reproduces that as a pure function of (image, seed, config):
:func:`frame_image` (the processed square), :func:`sample_crop_box` (torchvision 0.29's
``RandomResizedCrop.make_params`` line for line, on a ``torch.Generator`` seeded with the item's
seed instead of the global RNG: for seed s it draws exactly what torchvision draws after
``torch.manual_seed(s)``), :func:`resized_crop` (torchvision's tensor kernel: crop, then
``interpolate(bilinear, align_corners=False, antialias=True)``; the crop is always upsampled, where
antialiasing changes nothing, so torchvision versions that default it off agree). Where we differ from
the authors: their crop is drawn anew at every forward pass (the policy's and the reference model's
passes of one step even see different crops), ours once per item and seed, as a dataset holds it; the
image is resized *before* it is padded (memory stays O(output_size^2) for any input; the two
orders differ by the bicubic blend along the padding edge and <= 1 px of offset), and the result is
stored as 8-bit pixels (crop, resize and the processor's normalisation commute, so the only loss is
rounding, <= 0.5 level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from mfpo.negatives.config import MdpoConfig

UInt8Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Frame:
    """Where the framed image sits in the source: framed pixel (y, x) <- source (y - top, x - left) / scale."""

    scale: float
    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class CropBox:
    """A crop of the framed image (pixels): rows top .. top+height-1, columns left .. left+width-1."""

    top: int
    left: int
    height: int
    width: int
    fallback: bool = False
    """True when torchvision's 10 draws all failed and it took the central crop."""


def _resize(image: UInt8Image, height: int, width: int) -> UInt8Image:
    """PIL bicubic resize (the CLIP / SigLIP processors' filter); the same array when the size is unchanged."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC), dtype=np.uint8)


def frame_image(image: UInt8Image, config: MdpoConfig) -> tuple[UInt8Image, Frame]:
    """The image as mDPO's model receives it, before the crop: uint8 (S, S, 3) for ``pad_square``.

    pad_square (``expand2square`` + the processor's resize): scale s = S / max(H, W) (1 when
    ``output_size`` is None, S = max(H, W)), the image resized to (round(H s), round(W s)) and pasted
    at ((S - h) // 2, (S - w) // 2) on a square of ``pad_color`` (expand2square's centring).
    native: the image with its shorter side resized to ``output_size`` (kept when None).
    """
    h, w = image.shape[:2]
    if config.frame == "native":
        scale = 1.0 if config.output_size is None else config.output_size / min(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        return _resize(image, nh, nw), Frame(scale=scale, top=0, left=0, height=nh, width=nw)
    side = config.output_size if config.output_size is not None else max(h, w)
    scale = side / max(h, w)
    nh, nw = min(side, max(1, round(h * scale))), min(side, max(1, round(w * scale)))
    top, left = (side - nh) // 2, (side - nw) // 2
    framed = np.empty((side, side, 3), dtype=np.uint8)
    framed[:] = np.asarray(config.pad_color, dtype=np.uint8)
    framed[top : top + nh, left : left + nw] = _resize(image, nh, nw)
    return framed, Frame(scale=scale, top=top, left=left, height=side, width=side)


def crop_size(area: float, aspect_ratio: float) -> tuple[int, int]:
    """(h, w) of a crop of ``area`` pixels and width/height ``aspect_ratio``: torchvision's
    w = round(sqrt(area * r)), h = round(sqrt(area / r)) (Python's round: half to even)."""
    return round(math.sqrt(area / aspect_ratio)), round(math.sqrt(area * aspect_ratio))


def central_crop(height: int, width: int, ratio: tuple[float, float]) -> CropBox:
    """torchvision's fallback after 10 failed draws: the largest centred crop with w/h inside ``ratio``."""
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        h = height
        w = round(h * max(ratio))
    else:
        w, h = width, height
    return CropBox(top=(height - h) // 2, left=(width - w) // 2, height=h, width=w, fallback=True)


def sample_crop_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator
) -> CropBox:
    """A random crop box of a (height, width) image: ``RandomResizedCrop.make_params`` of torchvision 0.29.

    Up to 10 draws of area = H W U(scale) and log aspect ~ U(log ratio) (the log of ``ratio`` in float32,
    as torchvision keeps it); the first (h, w) that fits gets top ~ randint(0, H - h + 1) and
    left ~ randint(0, W - w + 1); if none fits, :func:`central_crop`. Every draw uses ``generator``, in
    torchvision's order, so a generator seeded with s reproduces torchvision after ``torch.manual_seed(s)``.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = torch.exp(  # exp in float32, as torchvision takes it
            torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=generator)
        ).item()
        h, w = crop_size(target_area, aspect_ratio)
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return CropBox(top=top, left=left, height=h, width=w)
    return central_crop(height, width, ratio)


def resized_crop(image: UInt8Image, box: CropBox, height: int, width: int) -> UInt8Image:
    """The crop ``box`` of uint8 (H, W, 3) resized to (height, width): torchvision's tensor ``resized_crop``
    (slice, then ``interpolate(mode="bilinear", align_corners=False, antialias=True)``) in float32, rounded
    to uint8. Returns uint8 (height, width, 3)."""
    crop = image[box.top : box.top + box.height, box.left : box.left + box.width]
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].to(torch.float32)
    y = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return y[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def source_box(box: CropBox, frame: Frame, height: int, width: int) -> tuple[float, float, float, float]:
    """The crop as (x0, y0, x1, y1) in source-image pixels (clipped to the image): for the gallery and records."""
    x0 = (box.left - frame.left) / frame.scale
    y0 = (box.top - frame.top) / frame.scale
    x1 = (box.left + box.width - frame.left) / frame.scale
    y1 = (box.top + box.height - frame.top) / frame.scale
    w, h = float(width), float(height)
    return (min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h))


def mdpo_negative(image: UInt8Image, seed: int, config: MdpoConfig) -> tuple[UInt8Image, dict[str, Any]]:
    """mDPO's corrupted image for one item: :func:`frame_image` -> :func:`sample_crop_box` (generator seeded
    with ``seed``) -> :func:`resized_crop` back to the framed size.

    image: uint8 (H, W, 3). Returns the rejected image, uint8 (S, S, 3) for pad_square (the framed size), and
    the details: the framed size, the crop box in framed pixels, its area fraction, its box in source
    pixels, and ``fallback`` ("center_crop" when torchvision's central-crop fallback was taken, else None).
    """
    framed, frame = frame_image(image, config)
    generator = torch.Generator().manual_seed(seed)
    box = sample_crop_box(frame.height, frame.width, config.scale, config.ratio, generator)
    rejected = resized_crop(framed, box, frame.height, frame.width)
    details: dict[str, Any] = {
        "frame": config.frame,
        "framed_size": [frame.height, frame.width],
        "crop": {"top": box.top, "left": box.left, "height": box.height, "width": box.width},
        "area_fraction": box.height * box.width / float(frame.height * frame.width),
        "source_box": list(source_box(box, frame, image.shape[0], image.shape[1])),
        "fallback": "center_crop" if box.fallback else None,
    }
    return rejected, details
