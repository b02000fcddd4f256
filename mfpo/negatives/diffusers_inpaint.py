"""A diffusers inpainting pipeline behind the :class:`~mfpo.negatives.inpaint.Inpainter` protocol.

Loaded once from a local folder with ``AutoPipelineForInpainting.from_pretrained`` (Stable Diffusion
inpainting, SDXL inpainting, Kandinsky...; ``mfpo models tiny`` writes a tiny random-weight
``StableDiffusionInpaintPipeline`` that loads through the same call). Per batch:

1. :func:`working_size`: each image is resized so its longer side is ``resolution`` (each side rounded
   to the pipeline's multiple); images of one working size share a pipeline call (``batch_size``);
2. the pipeline denoises from pure noise (``strength=1``) with the given prompt, one CPU
   ``torch.Generator`` per image seeded with that image's seed (diffusers draws each image's latents
   from its own generator, so an image's fill does not depend on its batch);
3. the fill is resized back to the image's size and pasted inside the mask only
   (:func:`~mfpo.negatives.inpaint.composite`): outside it the pixels are the original bytes, not the
   VAE's reconstruction.

The safety checker, when the folder has one, is not loaded: it would replace a flagged fill with a
black image, which here would be a silently wrong rejected image.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from mfpo.devices import DtypeName, resolve_device, resolve_dtype
from mfpo.negatives.config import DiffusersInpaintConfig
from mfpo.negatives.inpaint import check_pairs, composite

UInt8Image = npt.NDArray[np.uint8]
BoolMask = npt.NDArray[np.bool_]


class InpainterLoadError(ValueError):
    """The inpainting pipeline folder is missing or cannot be loaded; the message says why."""


def working_size(height: int, width: int, resolution: int, multiple: int) -> tuple[int, int]:
    """(h, w) the pipeline works at: the longer side scaled to ``resolution``, each side rounded to a multiple
    of ``multiple`` (at least one multiple)."""
    scale = resolution / max(height, width)
    return (max(multiple, round(height * scale / multiple) * multiple),
            max(multiple, round(width * scale / multiple) * multiple))


def pipeline_multiple(pipe: Any) -> int:
    """The side multiple a pipeline accepts: 8 (diffusers' check) times the UNet's downsampling of the latents,
    times the VAE's factor, reduced to their least common multiple."""
    vae_factor = int(getattr(pipe, "vae_scale_factor", 8))
    unet = getattr(pipe, "unet", None)
    blocks = len(getattr(getattr(unet, "config", None), "block_out_channels", (0,))) if unet is not None else 1
    return math.lcm(8, vae_factor * 2 ** max(0, blocks - 1))


def dtype_argument(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``{"dtype": dtype}`` for diffusers that renamed ``torch_dtype`` (0.36+), else ``{"torch_dtype": dtype}``."""
    from diffusers.utils import deprecation_utils

    return {"dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype": dtype}


def load_pipeline(model_path: str, device: str, dtype: DtypeName) -> Any:
    """``AutoPipelineForInpainting.from_pretrained(model_path)`` on its device, weights in the resolved dtype,
    progress bars off, the safety checker left out; :class:`InpainterLoadError` with the reason."""
    from diffusers import AutoPipelineForInpainting

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    local = Path(model_path).exists()
    index = Path(model_path) / "model_index.json"
    if local and not index.is_file():
        raise InpainterLoadError(f"inpainting model {model_path!r}: no model_index.json (a diffusers pipeline folder?)")
    kwargs: dict[str, Any] = {}
    if local and "safety_checker" in json.loads(index.read_text()):
        kwargs |= {"safety_checker": None, "requires_safety_checker": False}
    try:
        pipe = AutoPipelineForInpainting.from_pretrained(model_path, local_files_only=local,
                                                         **dtype_argument(torch_dtype), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise InpainterLoadError(f"cannot load inpainting model {model_path!r}: {exc}") from exc
    pipe.to(torch_device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class DiffusersInpainter:
    """Diffusers inpainting (see the module docstring): ``pipe`` from :func:`load_pipeline` (loaded here when not
    given), the fill settings from ``config``."""

    name = "diffusers"

    def __init__(self, config: DiffusersInpaintConfig, pipe: Any | None = None) -> None:
        self.config = config
        self.pipe: Any = pipe if pipe is not None else load_pipeline(config.model_path, config.device, config.dtype)
        self.multiple = pipeline_multiple(self.pipe)

    def inpaint(
        self, images: Sequence[UInt8Image], masks: Sequence[BoolMask], seeds: Sequence[int]
    ) -> list[UInt8Image]:
        check_pairs(images, masks, seeds)
        out: list[UInt8Image | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            groups[working_size(image.shape[0], image.shape[1], self.config.resolution, self.multiple)].append(i)
        step = self.config.batch_size
        for size, members in groups.items():
            for start in range(0, len(members), step):
                chunk = members[start : start + step]
                fills = self._fill(size, [images[i] for i in chunk], [masks[i] for i in chunk],
                                   [seeds[i] for i in chunk])
                for i, fill in zip(chunk, fills, strict=True):
                    out[i] = composite(images[i], fill, masks[i])
        assert all(o is not None for o in out), "every image belongs to one working-size group"
        return [o for o in out if o is not None]

    def _fill(self, size: tuple[int, int], images: list[UInt8Image], masks: list[BoolMask],
              seeds: list[int]) -> list[UInt8Image]:
        """One pipeline call at working size (h, w); returns the fills resized back to each image's size."""
        h, w = size
        pil = [Image.fromarray(im).resize((w, h), Image.Resampling.BICUBIC) for im in images]
        # a mask pixel is masked at working size when any source pixel under it is (bilinear > 0): never smaller
        pil_masks = [Image.fromarray(np.asarray(np.asarray(
            Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BILINEAR)) > 0,
            dtype=np.uint8) * 255) for m in masks]
        cfg = self.config
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        with torch.inference_mode():
            result = self.pipe(
                prompt=[cfg.prompt] * len(images),
                negative_prompt=[cfg.negative_prompt] * len(images) if cfg.guidance_scale > 1 else None,
                image=pil, mask_image=pil_masks, height=h, width=w, strength=1.0,
                num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
                generator=generators, output_type="np",
            )
        fills = np.clip(np.rint(np.asarray(result.images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
        return [np.asarray(Image.fromarray(f).resize((im.shape[1], im.shape[0]), Image.Resampling.BICUBIC))
                for f, im in zip(fills, images, strict=True)]
