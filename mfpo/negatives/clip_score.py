"""AdaViP eq. 9: how much a candidate image still shows what the chosen answer says, under CLIP.

Score_i = sum_j Omega_CLIP(c_i, s_{w,j}) over the sentences s_{w,j} of the chosen answer y_w, and the
rejected image is the candidate with the lowest score (AdaViP sec. 3.2, Algorithm 1 lines 5-6).

- Omega_CLIP is CLIP's image-text logit, logit_scale * cos(image embedding, text embedding) (what
  ``CLIPModel`` returns as ``logits_per_image``); the choice is the same for any positive scale.
- Sentences: AdaViP has LLaMA-3 rewrite y_w into self-contained sentences within CLIP's 77 tokens;
  we split on sentence ends (:func:`split_sentences`) and let the tokenizer truncate each to the
  text tower's positions (ours: no LLM in the data path).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from mfpo.devices import autocast, resolve_device, resolve_dtype
from mfpo.negatives.config import ClipScoreConfig

UInt8Image = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class ClipLoadError(ValueError):
    """The CLIP folder is missing or cannot be loaded; the message says why."""


def split_sentences(text: str, limit: int) -> list[str]:
    """The first ``limit`` sentences of ``text``: split after . ! ? followed by white space, and at line
    breaks; stripped, empty ones dropped. A text without a sentence end is one sentence."""
    parts = [p.strip() for p in _SENTENCE_END.split(text)]
    return [p for p in parts if p][:limit]


def eq9_scores(image_embeds: FloatArray, text_embeds: FloatArray, logit_scale: float) -> npt.NDArray[np.float64]:
    """Score_i = sum_j logit_scale * cos(c_i, s_j) (AdaViP eq. 9).

    image_embeds: float (N, D) candidate embeddings; text_embeds: float (M, D) sentence embeddings (any
    norm; both are L2-normalised here). Returns float64 (N,).
    """
    img = np.asarray(image_embeds, dtype=np.float64)
    txt = np.asarray(text_embeds, dtype=np.float64)
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    return np.asarray(logit_scale * (img @ txt.T).sum(axis=1), dtype=np.float64)


def least_similar(scores: Sequence[float] | npt.NDArray[np.float64]) -> int:
    """Index of the lowest score (Algorithm 1: "I_l <- image with the least score in C"); the first on ties."""
    if len(scores) == 0:
        raise ValueError("no candidate to choose from")
    return int(np.argmin(np.asarray(scores, dtype=np.float64)))


class ClipScorer:
    """``CLIPModel`` + its processor from a local folder, loaded once; embeddings batched by ``batch_size``."""

    def __init__(self, config: ClipScoreConfig) -> None:
        from transformers import AutoProcessor, CLIPModel

        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        path = config.model_path
        local = Path(path).exists()
        try:
            self.processor: Any = AutoProcessor.from_pretrained(path, local_files_only=local)
            self.model: Any = cast(Any, CLIPModel.from_pretrained(path, local_files_only=local))
        except (OSError, ValueError) as exc:
            raise ClipLoadError(f"cannot load CLIP model {path!r}: {exc}") from exc
        self.model.to(self.device)
        self.model.eval()
        text_config: Any = self.model.config.text_config
        self.max_text_tokens = int(text_config.max_position_embeddings)
        self.logit_scale = float(self.model.logit_scale.exp().item())

    def embed_images(self, images: Sequence[UInt8Image]) -> FloatArray:
        """float32 (N, D) projected image embeddings of uint8 (H, W, 3) images (not normalised)."""
        out = []
        for start in range(0, len(images), self.config.batch_size):
            chunk = [Image.fromarray(im) for im in images[start : start + self.config.batch_size]]
            pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"].to(self.device)
            with torch.inference_mode(), autocast(self.device, self.dtype):
                pooled = self.model.vision_model(pixel_values=pixels).pooler_output
                out.append(self.model.visual_projection(pooled).float().cpu().numpy())
        dim = int(self.model.config.projection_dim)
        return np.concatenate(out) if out else np.zeros((0, dim), dtype=np.float32)

    def embed_texts(self, texts: Sequence[str]) -> FloatArray:
        """float32 (M, D) projected text embeddings, each text truncated to the text tower's positions."""
        if not texts:
            return np.zeros((0, int(self.model.config.projection_dim)), dtype=np.float32)
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True,
                                max_length=self.max_text_tokens)
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode(), autocast(self.device, self.dtype):
            pooled = self.model.text_model(**tokens).pooler_output
            return np.asarray(self.model.text_projection(pooled).float().cpu().numpy(), dtype=np.float32)
