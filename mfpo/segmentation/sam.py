"""Segment-anything with box prompts: checkpoint loading and batched segmentation.

:func:`load_sam` builds the architecture named by ``sam_type`` (``sam_model_registry``
for vit_h / vit_l / vit_b, :mod:`mfpo.segmentation.architectures` for all of them) and
loads a checkpoint in segment-anything's format (a plain state dict) strictly, so a
corrupt file or a checkpoint of another size fails at start-up with a clear message.

:class:`SamSegmenter` runs the image encoder on a *batch* of images at once
(``ResizeLongestSide`` to 1024, ``Sam.preprocess`` normalize + pad, one
``image_encoder`` call, bf16 autocast on GPU, SDPA attention (:mod:`.attention`)) and
then, per image, all of its boxes in one ``SamPredictor.predict_torch`` call.
:meth:`SamSegmenter.segment_one_at_a_time` is the reference path (``SamPredictor.set_image``
per image); both give the same masks.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from mfpo.devices import autocast, resolve_device, resolve_dtype
from mfpo.prefetch import prefetched
from mfpo.segmentation import architectures
from mfpo.segmentation.attention import use_sdpa_attention
from mfpo.segmentation.config import SamConfig

UInt8Image = npt.NDArray[np.uint8]
BoolMasks = npt.NDArray[np.bool_]

_EMBED_DIM_TO_TYPE = architectures.EMBED_DIM_TO_TYPE


class ModelLoadError(ValueError):
    """A model file is missing, corrupt, or does not match its declared architecture."""


def build_sam_architecture(sam_type: str) -> Any:
    """An untrained ``segment_anything.modeling.Sam`` of the given type (CPU, float32)."""
    try:
        return architectures.build_sam_architecture(sam_type)
    except architectures.UnknownSamType as exc:
        raise ModelLoadError(str(exc)) from None


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a segment-anything checkpoint file, with readable errors."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"SAM checkpoint {str(p)!r} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise ModelLoadError(f"SAM checkpoint {str(p)!r} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(state, dict) or "image_encoder.patch_embed.proj.weight" not in state:
        raise ModelLoadError(f"SAM checkpoint {str(p)!r} is not a segment-anything state dict")
    return state


def load_sam(sam_type: str, checkpoint: str | Path) -> Any:
    """Build ``sam_type`` and load ``checkpoint`` strictly; returns the model on CPU in eval mode."""
    state = read_checkpoint(checkpoint)
    embed_dim = int(state["image_encoder.patch_embed.proj.weight"].shape[0])
    actual = _EMBED_DIM_TO_TYPE.get(embed_dim, f"an unknown size (embed dim {embed_dim})")
    if actual != sam_type:
        raise ModelLoadError(
            f"SAM checkpoint {str(checkpoint)!r} is a {actual} checkpoint, but sam_type is {sam_type!r}"
        )
    model = build_sam_architecture(sam_type)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"SAM checkpoint {str(checkpoint)!r} does not fit {sam_type}: {exc}") from exc
    return model.eval()


class SamSegmenter:
    """SAM loaded once; masks for box prompts, images batched through the encoder."""

    def __init__(self, config: SamConfig) -> None:
        from segment_anything import SamPredictor
        from segment_anything.utils.transforms import ResizeLongestSide

        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.model = load_sam(config.sam_type, config.checkpoint).to(self.device)
        if config.attention == "sdpa":
            use_sdpa_attention(self.model.image_encoder)
        self.predictor = SamPredictor(self.model)
        self.transform = ResizeLongestSide(self.model.image_encoder.img_size)

    # -- batched path ----------------------------------------------------------------------

    def preprocess(self, image: UInt8Image) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 (H, W, 3) -> normalized, padded float (3, S, S) on CPU, and the resized (h, w)."""
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float()
        pixel_mean, pixel_std = self.model.pixel_mean.cpu(), self.model.pixel_std.cpu()
        x = (x - pixel_mean) / pixel_std
        size = self.model.image_encoder.img_size
        h, w = x.shape[-2:]
        x = torch.nn.functional.pad(x, (0, size - w, 0, size - h))
        return x[0], (int(resized.shape[0]), int(resized.shape[1]))

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, C, 64, 64) float32 of a preprocessed batch (B, 3, S, S)."""
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            return self.model.image_encoder(batch.to(self.device)).float()

    def masks_for_boxes(
        self, embedding: torch.Tensor, original_size: tuple[int, int], input_size: tuple[int, int], boxes: np.ndarray
    ) -> BoolMasks:
        """bool (n, H, W): one mask per box of one image, all boxes in one ``predict_torch`` call."""
        h, w = original_size
        if len(boxes) == 0:
            return np.zeros((0, h, w), dtype=bool)
        p = self.predictor
        p.reset_image()
        p.features, p.original_size, p.input_size, p.is_image_set = embedding, original_size, input_size, True
        box_t = self.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float32), original_size)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            masks, _, _ = p.predict_torch(None, None, boxes=box_t.to(self.device), multimask_output=False)
        p.reset_image()
        return masks[:, 0].cpu().numpy().astype(bool)

    def segment(self, images: Sequence[UInt8Image], boxes: Sequence[np.ndarray]) -> list[BoolMasks]:
        """Masks (n_i, H_i, W_i) for each image's boxes (n_i, 4) pixels; encoder batched by batch_size."""
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} box arrays")
        out: list[BoolMasks] = [np.zeros((0, *im.shape[:2]), dtype=bool) for im in images]
        todo = [i for i, b in enumerate(boxes) if len(b)]
        step = self.config.effective_batch_size
        chunks = [todo[s : s + step] for s in range(0, len(todo), step)]
        # the loader thread resizes/normalizes chunk k+1 while the encoder runs on chunk k
        for chunk, prepared in prefetched(chunks, lambda c: [self.preprocess(images[i]) for i in c]):
            embeddings = self.embed(torch.stack([x for x, _ in prepared]))
            for j, i in enumerate(chunk):
                out[i] = self.masks_for_boxes(
                    embeddings[j : j + 1], images[i].shape[:2], prepared[j][1], np.asarray(boxes[i])
                )
        return out

    # -- reference path --------------------------------------------------------------------

    def segment_one_at_a_time(self, images: Sequence[UInt8Image], boxes: Sequence[np.ndarray]) -> list[BoolMasks]:
        """The naive path: ``SamPredictor.set_image`` per image, then its boxes (float32, no batching)."""
        out = []
        for image, b in zip(images, boxes, strict=True):
            if len(b) == 0:
                out.append(np.zeros((0, *image.shape[:2]), dtype=bool))
                continue
            with torch.inference_mode():
                self.predictor.set_image(image)
                box_t = self.transform.apply_boxes_torch(torch.as_tensor(b, dtype=torch.float32), image.shape[:2])
                masks, _, _ = self.predictor.predict_torch(
                    None, None, boxes=box_t.to(self.device), multimask_output=False
                )
            self.predictor.reset_image()
            out.append(masks[:, 0].cpu().numpy().astype(bool))
        return out
