"""The three stages of one job item, each resumable from the store (worker task bodies).

MFPO's data path split where the hardware changes: keywords (CPU) -> regions (GPU when
grounding + SAM are configured) -> perturbation and record (CPU). Each stage reads what
the previous one wrote under ``work/{item}/`` of the job, so stages can run on different
machines, and each is idempotent: it does nothing once the item has an outcome, and
re-running it rewrites the same keys. A permanent problem ends the item ``failed`` with
its reason; transient store errors propagate for the caller to retry.

=========================  ============================================================
``keywords.json``          ranked keywords (:class:`~mfpo.schemas.KeywordScore` list)
``regions.npz``            masks (n, H, W) bit-packed, their sources and keywords, fallback
=========================  ============================================================
"""

from __future__ import annotations

import io
import json

import numpy as np

from mfpo.jobs.records import ItemOutcome, JobRecord
from mfpo.jobs.store import JobKeys, JobStore
from mfpo.pipeline.item import (
    ItemError,
    PreparedItem,
    finish_item,
    locate_regions,
    prepare_item,
    select_keywords,
    store_outputs,
)
from mfpo.pipeline.resources import StageResources
from mfpo.regions.base import Region, RegionResult
from mfpo.schemas import Failure, KeywordScore
from mfpo.storage.base import ObjectNotFound

STAGES = ("keywords", "regions", "perturb")


class MissingStageOutput(LookupError):
    """A stage's input from the previous stage is not in the store (and was not to be recomputed here)."""


def _work_key(job: JobRecord, item_id: str, name: str) -> str:
    return f"{JobKeys(job.tenant, job.id).root}/work/{item_id}/{name}"


def _fail(jobs: JobStore, job: JobRecord, item_id: str, seq: int | None, exc: ItemError) -> None:
    failure = Failure(row=seq, id=item_id, stage=exc.stage, reason=exc.reason)
    jobs.put_outcome(job, ItemOutcome(item_id=item_id, status="failed", failure=failure))


def _prepare(jobs: JobStore, job: JobRecord, item_id: str) -> PreparedItem:
    stored = jobs.get_item(job, item_id)
    return prepare_item(stored.seq, stored.item, jobs.image_bytes(stored), job.options)


def encode_regions(result: RegionResult) -> bytes:
    """``regions.npz`` bytes: bit-packed masks (n, H, W), sources, keywords ('' for none), fallback."""
    regions = result.regions
    shape = regions[0].mask.shape if regions else (0, 0)
    masks = np.stack([r.mask for r in regions]) if regions else np.zeros((0, *shape), dtype=bool)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        masks=np.packbits(masks, axis=-1),
        shape=np.array(shape, dtype=np.int64),
        sources=np.array([r.source for r in regions], dtype=str),
        keywords=np.array([r.keyword or "" for r in regions], dtype=str),
        fallback=np.array(result.fallback),
    )
    return buf.getvalue()


def decode_regions(data: bytes) -> RegionResult:
    """Inverse of :func:`encode_regions`."""
    with np.load(io.BytesIO(data)) as z:
        h, w = (int(v) for v in z["shape"])
        masks = np.unpackbits(z["masks"], axis=-1, count=w).astype(bool).reshape(-1, h, w)
        regions = [
            Region(mask=m.reshape(h, w), source=str(s), keyword=str(k) or None)  # type: ignore[arg-type]
            for m, s, k in zip(masks, z["sources"], z["keywords"], strict=True)
        ]
        return RegionResult(regions=regions, fallback=bool(z["fallback"]))


def keywords_stage(jobs: JobStore, job: JobRecord, item_id: str, resources: StageResources) -> bool:
    """Stage 1 (CPU): rank the chosen answer's keywords. False if the item is finished (or failed now)."""
    if jobs.get_outcome(job, item_id) is not None:
        return False
    try:
        prepared = _prepare(jobs, job, item_id)
        keywords = select_keywords(prepared, job.options, resources)
    except ItemError as exc:
        _fail(jobs, job, item_id, jobs.get_item(job, item_id).seq, exc)
        return False
    data = json.dumps([k.model_dump(mode="json") for k in keywords]).encode("utf-8")
    jobs.store.put(_work_key(job, item_id, "keywords.json"), data, "application/json")
    return True


def _keywords(jobs: JobStore, job: JobRecord, item_id: str, resources: StageResources) -> list[KeywordScore]:
    key = _work_key(job, item_id, "keywords.json")
    try:
        raw = jobs.store.get(key)
    except ObjectNotFound:  # stage 1's output was lost (e.g. deleted store prefix): redo it
        keywords_stage(jobs, job, item_id, resources)
        raw = jobs.store.get(key)
    return [KeywordScore.model_validate(k) for k in json.loads(raw)]


def regions_stage(jobs: JobStore, job: JobRecord, item_id: str, resources: StageResources) -> bool:
    """Stage 2 (GPU with grounding + SAM): keywords -> region masks through the fallback chain."""
    if jobs.get_outcome(job, item_id) is not None:
        return False
    try:
        prepared = _prepare(jobs, job, item_id)
    except ItemError as exc:
        _fail(jobs, job, item_id, jobs.get_item(job, item_id).seq, exc)
        return False
    keywords = _keywords(jobs, job, item_id, resources)
    [regions] = locate_regions([prepared], [keywords], resources)
    jobs.store.put(_work_key(job, item_id, "regions.npz"), encode_regions(regions), "application/octet-stream")
    return True


def perturb_stage(
    jobs: JobStore, job: JobRecord, item_id: str, resources: StageResources, recompute_missing: bool = True
) -> ItemOutcome:
    """Stage 3 (CPU): noise inside the regions, write outputs, then the outcome (last).

    A missing ``regions.npz`` is recomputed here with ``resources`` (one-process runs), or, with
    ``recompute_missing=False`` (a CPU worker without the region models), raises
    :class:`MissingStageOutput` so the caller re-queues the regions stage where the models are.
    """
    existing = jobs.get_outcome(job, item_id)
    if existing is not None:
        return existing
    try:
        prepared = _prepare(jobs, job, item_id)
    except ItemError as exc:
        _fail(jobs, job, item_id, jobs.get_item(job, item_id).seq, exc)
        outcome = jobs.get_outcome(job, item_id)
        assert outcome is not None
        return outcome
    keywords = _keywords(jobs, job, item_id, resources)
    try:
        regions = decode_regions(jobs.store.get(_work_key(job, item_id, "regions.npz")))
    except ObjectNotFound:
        if not recompute_missing:
            raise MissingStageOutput(f"item {item_id}: regions.npz") from None
        regions_stage(jobs, job, item_id, resources)
        regions = decode_regions(jobs.store.get(_work_key(job, item_id, "regions.npz")))
    outputs = finish_item(prepared, keywords, regions, job.options)
    store_outputs(jobs.outputs(job), outputs)
    outcome = ItemOutcome(item_id=item_id, status="done", record_key=prepared.keys.record)
    jobs.put_outcome(job, outcome)
    return outcome
