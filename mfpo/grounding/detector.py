"""Zero-shot detection of keyword phrases: GroundingDINO or OWLv2 through transformers.

:class:`ZeroShotDetector` loads ``AutoProcessor`` + ``AutoModelForZeroShotObjectDetection``
once and answers :meth:`~ZeroShotDetector.detect`: for each image, boxes per keyword.

GroundingDINO gets all keywords of an image in one prompt (``"red cup. dog."``); a
query box's score is its highest token probability, and it names the keyword whose
tokens have the highest probability if that is at least ``text_threshold`` (the
authors' phrase rule, applied per keyword span via the tokenizer's offsets). OWLv2
gets the keywords as separate text queries; a box names its best query. Per keyword:
boxes scoring at least ``box_threshold``, NMS at ``nms_iou``, the best
``max_boxes_per_keyword``. A keyword with no box is absent from the answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from mfpo.devices import autocast, resolve_device, resolve_dtype
from mfpo.grounding.boxes import detector_boxes_to_image, nms
from mfpo.grounding.config import GroundingConfig
from mfpo.prefetch import prefetched

UInt8Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class KeywordBoxes:
    """Boxes of one keyword in one image: pixel (x0, y0, x1, y1) float64 (n, 4), scores (n,)."""

    keyword: str
    boxes: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64]


def grounding_prompt(keywords: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """GroundingDINO prompt ``"kw1. kw2."`` (lowercase) and each keyword's character span."""
    parts, spans, pos = [], [], 0
    for kw in keywords:
        text = " ".join(kw.lower().split())
        spans.append((pos, pos + len(text)))
        parts.append(text + ".")
        pos += len(text) + 2  # ". "
    return " ".join(parts), spans


def token_spans(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Token indexes inside each character span (special tokens have offset (0, 0) and are skipped)."""
    out = []
    for start, end in spans:
        out.append([t for t, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end])
    return out


def select_keyword_boxes(
    keywords: Sequence[str],
    boxes: npt.NDArray[np.float64],
    box_scores: npt.NDArray[np.float64],
    keyword_scores: npt.NDArray[np.float64],
    config: GroundingConfig,
    text_threshold: float,
) -> dict[str, KeywordBoxes]:
    """Assign each query box to its best keyword, threshold, NMS and cap per keyword.

    boxes: (Q, 4) pixels; box_scores: (Q,) detection score; keyword_scores: (Q, K)
    score of each keyword for each box.
    """
    out: dict[str, KeywordBoxes] = {}
    if len(keywords) == 0 or len(boxes) == 0:
        return out
    best = keyword_scores.argmax(axis=1)
    best_score = keyword_scores[np.arange(len(best)), best]
    keep = (box_scores >= config.box_threshold) & (best_score >= text_threshold)
    for k, kw in enumerate(keywords):
        idx = np.flatnonzero(keep & (best == k))
        if idx.size == 0:
            continue
        kept = idx[nms(boxes[idx], box_scores[idx], config.nms_iou)][: config.max_boxes_per_keyword]
        out.setdefault(kw, KeywordBoxes(kw, boxes[kept], box_scores[kept]))
    return out


def detect_architecture(model_path: str) -> str:
    """``grounding_dino`` or ``owlv2`` from the folder's config.json ``model_type``."""
    config_file = Path(model_path) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"grounding model {model_path!r}: no config.json (a transformers model folder?)")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type not in ("grounding-dino", "grounding_dino", "owlv2"):
        raise ValueError(
            f"grounding model {model_path!r} has model_type {model_type!r}; use a GroundingDINO or OWLv2 checkpoint"
        )
    return "owlv2" if model_type == "owlv2" else "grounding_dino"


class ZeroShotDetector:
    """GroundingDINO / OWLv2 detector, loaded once; ``detect`` batches images."""

    def __init__(self, config: GroundingConfig) -> None:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.config = config
        path = config.model_path
        local = Path(path).exists()
        if local:
            self.architecture = detect_architecture(path)
        elif config.architecture == "auto":
            raise FileNotFoundError(
                f"grounding model folder {path!r} not found (for a hub id, set architecture explicitly)"
            )
        else:
            self.architecture = config.architecture
        if config.architecture not in ("auto", self.architecture):
            raise ValueError(f"grounding model {path!r} is {self.architecture}, not {config.architecture}")
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        try:
            self.processor: Any = AutoProcessor.from_pretrained(path, local_files_only=local)
            try:  # SDPA attention where the architecture has it (OWLv2's text/vision towers)
                self.model: Any = AutoModelForZeroShotObjectDetection.from_pretrained(
                    path, local_files_only=local, attn_implementation="sdpa"
                )
            except ValueError:  # e.g. GroundingDINO: its own (deformable) attention only
                self.model = AutoModelForZeroShotObjectDetection.from_pretrained(path, local_files_only=local)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load grounding model {path!r}: {exc}") from exc
        self.attention = str(getattr(self.model.config, "_attn_implementation", "eager"))
        self.model.to(self.device).eval()

    def detect(
        self, images: Sequence[UInt8Image], keywords: Sequence[Sequence[str]]
    ) -> list[dict[str, KeywordBoxes]]:
        """Boxes per keyword for each image; images are uint8 (H, W, 3), batched by ``batch_size``."""
        if len(images) != len(keywords):
            raise ValueError(f"{len(images)} images but {len(keywords)} keyword lists")
        out: list[dict[str, KeywordBoxes]] = [{} for _ in images]
        todo = [i for i, kws in enumerate(keywords) if kws]
        step = self.config.batch_size
        chunks = [todo[s : s + step] for s in range(0, len(todo), step)]
        owl = self.architecture == "owlv2"
        prepare = self._prepare_owlv2 if owl else self._prepare_grounding_dino
        finish = self._finish_owlv2 if owl else self._finish_grounding_dino

        def prepare_chunk(chunk: list[int]) -> Any:
            return prepare([images[i] for i in chunk], [list(keywords[i]) for i in chunk])

        # the loader thread runs the processor (resize, normalize, tokenize) on chunk k+1 meanwhile
        for chunk, prepared in prefetched(chunks, prepare_chunk):
            found = finish(prepared, self._forward(prepared["inputs"]))
            for i, f in zip(chunk, found, strict=True):
                out[i] = f
        return out

    def _forward(self, inputs: Any) -> Any:
        if self.device.type == "cuda":
            inputs = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in inputs.items()}
        inputs = {k: v.to(self.device, non_blocking=True) if hasattr(v, "to") else v for k, v in inputs.items()}
        with torch.inference_mode(), autocast(self.device, self.dtype):
            return self.model(**inputs)

    def _prepare_grounding_dino(self, images: list[UInt8Image], keywords: list[list[str]]) -> dict[str, Any]:
        prompts, spans = zip(*(grounding_prompt(kws) for kws in keywords), strict=True)
        pil = [Image.fromarray(im) for im in images]
        inputs = self.processor(images=pil, text=list(prompts), return_tensors="pt", padding=True)
        offsets = self.processor.tokenizer(list(prompts), return_offsets_mapping=True, padding=True)["offset_mapping"]
        return {"inputs": inputs, "offsets": offsets, "spans": spans, "images": images, "keywords": keywords}

    def _finish_grounding_dino(self, prepared: dict[str, Any], outputs: Any) -> list[dict[str, KeywordBoxes]]:
        inputs, offsets, spans = prepared["inputs"], prepared["offsets"], prepared["spans"]
        images, keywords = prepared["images"], prepared["keywords"]
        probs = outputs.logits.float().sigmoid().cpu().numpy()  # (B, Q, 256)
        pred = outputs.pred_boxes.float().cpu().numpy()  # (B, Q, 4) normalized cxcywh
        n_tokens = inputs["input_ids"].shape[1]
        results = []
        for b, im in enumerate(images):
            token_sets = token_spans(offsets[b], spans[b])
            p = probs[b][:, :n_tokens]
            keyword_scores = np.stack(
                [p[:, t].max(axis=1) if t else np.zeros(len(p)) for t in token_sets], axis=1
            ).astype(np.float64)
            boxes = detector_boxes_to_image(pred[b], im.shape[0], im.shape[1], square_padded=False)
            results.append(
                select_keyword_boxes(
                    keywords[b], boxes, p.max(axis=1).astype(np.float64), keyword_scores, self.config,
                    self.config.text_threshold,
                )
            )
        return results

    def _prepare_owlv2(self, images: list[UInt8Image], keywords: list[list[str]]) -> dict[str, Any]:
        pil = [Image.fromarray(im) for im in images]
        width = max(len(k) for k in keywords)
        queries = [[*k, *([" "] * (width - len(k)))] for k in keywords]
        # each image's queries are tokenized separately, then stacked: pad all to the model's text length
        inputs = self.processor(text=queries, images=pil, return_tensors="pt", padding="max_length")
        return {"inputs": inputs, "images": images, "keywords": keywords}

    def _finish_owlv2(self, prepared: dict[str, Any], outputs: Any) -> list[dict[str, KeywordBoxes]]:
        images, keywords = prepared["images"], prepared["keywords"]
        probs = outputs.logits.float().sigmoid().cpu().numpy()  # (B, patches, queries)
        pred = outputs.pred_boxes.float().cpu().numpy()  # (B, patches, 4), normalized to the padded square
        results = []
        for b, im in enumerate(images):
            keyword_scores = probs[b][:, : len(keywords[b])].astype(np.float64)
            boxes = detector_boxes_to_image(pred[b], im.shape[0], im.shape[1], square_padded=True)
            results.append(
                select_keyword_boxes(
                    keywords[b], boxes, keyword_scores.max(axis=1), keyword_scores, self.config, 0.0
                )
            )
        return results
