"""AdaViP's vision-based rejected image (sec. 3.2, Algorithm 1 lines 3-7): remove the key object.

For each item (Q, I_w, y_w):

1. candidate objects M (eq. 5-7, :func:`collect_candidates`): AdaViP tags the image with RAM, boxes
   each tag with GroundingDINO and segments each box with SAM. We take the item's keyword regions
   from the regions stage (annotations, or grounding + SAM on the chosen answer's keywords) and,
   with ``candidates="regions+detector"``, the grounding model's detections of ``detect_labels``
   segmented by SAM (:func:`detect_objects`; the loaded :class:`~mfpo.regions.grounded.GroundedProvider`,
   no second copy of the models). Each mask is dilated by ``mask_dilation`` (ours: AdaViP does not
   say); degenerate masks, detections of an object already a candidate, and candidates beyond
   ``max_candidates`` are skipped, each with its reason in the details;
2. the candidate set C (eq. 8): c_i = the image with object i inpainted away (:class:`Inpainter`,
   one seed per candidate), pixels outside the dilated mask unchanged;
3. Score_i = sum_j CLIP(c_i, s_{w,j}) over the chosen answer's sentences (eq. 9,
   :mod:`mfpo.negatives.clip_score`);
4. I_l = the candidate with the least score (Algorithm 1 line 6).

An item with no usable candidate gets MFPO's global diffusion noise instead (``fallback="global_noise"``,
with the reason): AdaViP does not say what it does then; MFPO's own rule for images without a
region is global noise.

Batching: the candidates of all items of a call are inpainted and embedded in batches of the CLIP
``batch_size``; only each candidate's embedding and the filled pixels inside its mask's bounding box
are kept, so memory holds one batch of full images at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mfpo.negatives.base import NegativeRequest, NegativeResult, check_image, derive_seed, negatives_error
from mfpo.negatives.clip_score import ClipScorer, eq9_scores, least_similar, split_sentences
from mfpo.negatives.config import AdavipConfig
from mfpo.negatives.inpaint import Inpainter, dilate_mask, mask_bbox
from mfpo.negatives.noise import global_negative
from mfpo.perturbation import PerturbationConfig
from mfpo.regions.base import Region, RegionProvider, RegionRequest
from mfpo.regions.masks import mask_box

UInt8Image = npt.NDArray[np.uint8]
BoolMask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Candidate:
    """One object to remove: its label (keyword or detector query), where it came from and its removal mask
    (bool (H, W), already dilated)."""

    label: str | None
    source: str
    mask: BoolMask


def mask_iou(a: BoolMask, b: BoolMask) -> float:
    """|a & b| / |a | b| of two bool (H, W) masks (0 for two empty masks)."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def detect_objects(requests: Sequence[NegativeRequest], detector: RegionProvider, config: AdavipConfig) -> list[
    list[Region]
]:
    """The detector's objects of each image: ``detect_labels`` asked in groups of ``labels_per_query``, all
    groups of all images in one ``detector.locate`` call (the provider batches its models). Returns one list
    of regions (one per found label, in label order) per request."""
    labels = config.detect_labels
    groups = [tuple(labels[s : s + config.labels_per_query]) for s in range(0, len(labels), config.labels_per_query)]
    asks = [RegionRequest(image=r.image, keywords=g, seed=r.seed) for r in requests for g in groups]
    found = detector.locate(asks) if asks else []
    per_item = len(groups)
    return [[reg for part in found[i * per_item : (i + 1) * per_item] for reg in part] for i in range(len(requests))]


def collect_candidates(request: NegativeRequest, detections: Sequence[Region], config: AdavipConfig) -> tuple[
    list[Candidate], list[dict[str, Any]]
]:
    """AdaViP's M (eq. 5-7) for one item: keyword regions first, then detections; (candidates, skipped).

    Each mask is dilated by ``mask_dilation`` (:func:`mfpo.negatives.inpaint.dilate_mask`). Skipped, with a
    reason: an object mask under ``min_mask_fraction``; a dilated mask over ``max_mask_fraction``; a
    detection of a label that is already a candidate or whose mask has IoU >= ``same_object_iou`` with an
    earlier candidate; anything past ``max_candidates``.
    """
    kept: list[Candidate] = []
    skipped: list[dict[str, Any]] = []
    labels: set[str] = set()
    pool = [(r, str(r.source)) for r in request.regions] + [(r, "detector") for r in detections]
    for region, source in pool:
        label = region.keyword

        def skip(reason: str, label: str | None = label, source: str = source) -> None:
            skipped.append({"label": label, "source": source, "reason": reason})

        if source == "detector" and label in labels:
            skip("already a candidate (keyword region)")
            continue
        area = float(region.mask.mean()) if region.mask.size else 0.0
        if area == 0.0 or area < config.min_mask_fraction:
            skip(f"mask too small ({area:.5f} < {config.min_mask_fraction})")
            continue
        mask = dilate_mask(region.mask, config.mask_dilation)
        grown = float(mask.mean())
        if grown > config.max_mask_fraction:
            skip(f"dilated mask covers {grown:.3f} of the image (> {config.max_mask_fraction})")
            continue
        if source == "detector":
            same = next((c for c in kept if mask_iou(mask, c.mask) >= config.same_object_iou), None)
            if same is not None:
                skip(f"same object as candidate {same.label!r} (IoU >= {config.same_object_iou})")
                continue
        if len(kept) >= config.max_candidates:
            skip(f"beyond max_candidates={config.max_candidates}")
            continue
        kept.append(Candidate(label=label, source=source, mask=mask))
        if label is not None:
            labels.add(label)
    return kept, skipped


def paste(image: UInt8Image, mask: BoolMask, box: tuple[int, int, int, int], patch: UInt8Image) -> UInt8Image:
    """uint8 (H, W, 3): ``image`` with the pixels of ``mask`` inside ``box`` = (y0, y1, x0, x1) taken from
    ``patch`` (the filled image's box)."""
    y0, y1, x0, x1 = box
    out = image.copy()
    window = mask[y0:y1, x0:x1]
    out[y0:y1, x0:x1][window] = patch[window]
    return out


def inpaint_candidates(inpainter: Inpainter, requests: Sequence[NegativeRequest],
                       plans: Sequence[tuple[list[Candidate], list[dict[str, Any]]]],
                       part: Sequence[tuple[int, int]]) -> list[UInt8Image]:
    """Eq. 8 for a batch of (item, candidate) pairs: one inpainter call, candidate k of an item seeded with
    ``derive_seed(item seed, "adavip", k)``. An input the inpainter rejects (ValueError) is found by retrying the
    pairs one by one and fails its own item (:func:`negatives_error`)."""
    images = [requests[i].image for i, _ in part]
    masks = [plans[i][0][k].mask for i, k in part]
    seeds = [derive_seed(requests[i].seed, "adavip", k) for i, k in part]
    try:
        return inpainter.inpaint(images, masks, seeds)
    except ValueError:
        pass
    out = []
    for image, mask, seed, (i, k) in zip(images, masks, seeds, part, strict=True):
        try:
            out += inpainter.inpaint([image], [mask], [seed])
        except ValueError as exc:
            label = plans[i][0][k].label
            raise negatives_error(f"inpainting candidate {label!r} failed: {exc}", requests[i].id) from exc
    return out


def check_adavip_request(request: NegativeRequest) -> None:
    """:func:`~mfpo.negatives.base.check_image`, and a chosen answer with at least one sentence (eq. 9 scores
    against it)."""
    check_image(request)
    if not split_sentences(request.chosen, 1):
        raise negatives_error("AdaViP scores candidate images against the chosen answer, which is empty", request.id)


def adavip_negatives(
    requests: Sequence[NegativeRequest],
    config: AdavipConfig,
    inpainter: Inpainter,
    scorer: ClipScorer,
    perturbation: PerturbationConfig,
    detector: RegionProvider | None = None,
) -> list[NegativeResult]:
    """AdaViP's rejected image for each request (module docstring); one :class:`NegativeResult` per request.

    result.image: uint8 (H, W, 3), the chosen candidate (or global noise); result.mask: its removal mask;
    details: ``candidates`` (label, source, area, box, score of every candidate, in order), ``chosen`` (index),
    ``skipped`` (label, source, reason), ``sentences`` (how many were scored), ``inpainter``, ``mask_dilation``.
    ``detector`` is needed with ``candidates="regions+detector"``.
    """
    for request in requests:
        check_adavip_request(request)
    if config.candidates == "regions+detector":
        if detector is None:
            raise ValueError("adavip candidates 'regions+detector' needs the grounded provider (regions.grounding + "
                             "regions.sam)")
        detections = detect_objects(requests, detector, config)
    else:
        detections = [[] for _ in requests]
    plans = [collect_candidates(r, d, config) for r, d in zip(requests, detections, strict=True)]
    jobs = [(i, k) for i, (cands, _) in enumerate(plans) for k in range(len(cands))]
    embeds: dict[tuple[int, int], npt.NDArray[np.float32]] = {}
    patches: dict[tuple[int, int], tuple[tuple[int, int, int, int], UInt8Image]] = {}
    step = scorer.config.batch_size
    for start in range(0, len(jobs), step):
        part = jobs[start : start + step]
        masks = [plans[i][0][k].mask for i, k in part]
        filled = inpaint_candidates(inpainter, requests, plans, part)
        for (i, k), image, emb, mask in zip(part, filled, scorer.embed_images(filled), masks, strict=True):
            box = mask_bbox(mask)
            assert box is not None  # candidates have non-empty masks
            embeds[(i, k)] = emb
            patches[(i, k)] = (box, image[box[0] : box[1], box[2] : box[3]].copy())
        del filled
    sentences = [split_sentences(r.chosen, config.max_sentences) if plans[i][0] else []
                 for i, r in enumerate(requests)]
    flat = [s for item in sentences for s in item]
    text = scorer.embed_texts(flat)
    results = []
    offset = 0
    for i, request in enumerate(requests):
        candidates, skipped = plans[i]
        base = {"skipped": skipped, "inpainter": inpainter.name, "mask_dilation": config.mask_dilation}
        if not candidates:
            image, mask, noise = global_negative(request.image, request.seed, perturbation)
            reason = "no usable candidate object" + (" (all skipped)" if skipped else " (no region, no detection)")
            results.append(NegativeResult(kind="adavip", image=image, mask=mask, fallback="global_noise",
                                          details=base | {"candidates": [], "chosen": None, "reason": reason,
                                                          "noise": noise}))
            continue
        n = len(sentences[i])
        scores = eq9_scores(np.stack([embeds[(i, k)] for k in range(len(candidates))]), text[offset : offset + n],
                            scorer.logit_scale)
        offset += n
        chosen = least_similar(scores)
        box, patch = patches[(i, chosen)]
        mask = candidates[chosen].mask
        listed = [{"label": c.label, "source": c.source, "area": float(c.mask.mean()), "box": list(mask_box(c.mask)),
                   "score": float(s)} for c, s in zip(candidates, scores, strict=True)]
        results.append(NegativeResult(kind="adavip", image=paste(request.image, mask, box, patch), mask=mask,
                                      details=base | {"candidates": listed, "chosen": chosen, "sentences": n}))
    return results
