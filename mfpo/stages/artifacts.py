"""What stages read and write: the named artifacts of a chunk and their byte encodings.

=============  ===============================  =================================================
artifact       written by                        bytes
=============  ===============================  =================================================
``items``      intake (gateway / reader)         :class:`~mfpo.stages.chunk.Chunk` JSON
``images``     intake                            the items' image bytes (:mod:`mfpo.stages.blob`)
``keywords``   keywords stage                    JSON: ranked keywords per item + failures so far
``regions``    regions stage                     npz: bit-packed masks per item + failures so far
``negatives``  negatives stage                   JSON: per item each constructor's record + failures so far
``outcomes``   perturb stage (last, the commit)  JSON lines: one ``done`` record or ``failed`` per item
=============  ===============================  =================================================

Every stage output carries the failures of the stages before it, so the last stage can
write an outcome for every item of the chunk and nothing is lost between stages.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, Field

from mfpo.regions.base import Region, RegionResult
from mfpo.schemas import Failure, KeywordScore, NegativeRecord, ResultRecord

T = TypeVar("T")

ArtifactName = Literal["items", "images", "keywords", "regions", "negatives", "outcomes"]
ARTIFACTS: tuple[ArtifactName, ...] = ("items", "images", "keywords", "regions", "negatives", "outcomes")


@dataclass
class StageOutput(Generic[T]):
    """A stage's result for a chunk: one value per item that got through, one failure per item that did not."""

    results: dict[str, T] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)


class Outcome(BaseModel):
    """How one item of a chunk ended: ``done`` with its record, or ``failed`` with the reason."""

    id: str
    index: int = Field(ge=0, description="Position in the chunk.")
    row: int | None = Field(default=None, description="Input row / submission index of the item.")
    status: Literal["done", "failed"]
    record: ResultRecord | None = None
    failure: Failure | None = None


# -- keywords ---------------------------------------------------------------------------------


def encode_keywords(output: StageOutput[list[KeywordScore]]) -> bytes:
    payload = {
        "results": {i: [k.model_dump(mode="json") for k in kws] for i, kws in output.results.items()},
        "failures": {i: f.model_dump(mode="json") for i, f in output.failures.items()},
    }
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def decode_keywords(data: bytes) -> StageOutput[list[KeywordScore]]:
    payload = json.loads(data)
    return StageOutput(
        results={i: [KeywordScore.model_validate(k) for k in kws] for i, kws in payload["results"].items()},
        failures={i: Failure.model_validate(f) for i, f in payload["failures"].items()},
    )


# -- regions ----------------------------------------------------------------------------------


def encode_regions(output: StageOutput[RegionResult]) -> bytes:
    """npz: ``meta`` (JSON: per item its mask count, size, sources, keywords, fallback; the failures) and
    ``m{n}``: the n-th item's masks, bool (k, H, W) bit-packed along W."""
    meta: dict[str, object] = {"failures": {i: f.model_dump(mode="json") for i, f in output.failures.items()}}
    arrays: dict[str, Any] = {}
    items = []
    for n, (item_id, result) in enumerate(output.results.items()):
        regions = result.regions
        h, w = regions[0].mask.shape if regions else (0, 0)
        items.append({"id": item_id, "h": h, "w": w, "sources": [r.source for r in regions],
                      "keywords": [r.keyword for r in regions], "fallback": result.fallback})
        masks = np.stack([r.mask for r in regions]) if regions else np.zeros((0, 0, 0), dtype=bool)
        arrays[f"m{n}"] = np.packbits(masks, axis=-1)
    meta["items"] = items
    buf = io.BytesIO()
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def decode_regions(data: bytes) -> StageOutput[RegionResult]:
    with np.load(io.BytesIO(data)) as z:
        meta = json.loads(z["meta"].tobytes().decode("utf-8"))
        results: dict[str, RegionResult] = {}
        for n, entry in enumerate(meta["items"]):
            h, w = entry["h"], entry["w"]
            packed = z[f"m{n}"]
            masks = np.unpackbits(packed, axis=-1, count=w).astype(bool) if w else packed.astype(bool)
            regions = [
                Region(mask=m.reshape(h, w), source=s, keyword=k)
                for m, s, k in zip(masks, entry["sources"], entry["keywords"], strict=True)
            ]
            results[entry["id"]] = RegionResult(regions=regions, fallback=bool(entry["fallback"]))
    failures = {i: Failure.model_validate(f) for i, f in meta["failures"].items()}
    return StageOutput(results=results, failures=failures)


# -- negatives --------------------------------------------------------------------------------


def encode_negatives(output: StageOutput[dict[str, NegativeRecord]]) -> bytes:
    """JSON: per item its constructors' records by kind (files already stored), and the failures so far."""
    payload = {
        "results": {i: {k: r.model_dump(mode="json") for k, r in kinds.items()} for i, kinds in output.results.items()},
        "failures": {i: f.model_dump(mode="json") for i, f in output.failures.items()},
    }
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def decode_negatives(data: bytes) -> StageOutput[dict[str, NegativeRecord]]:
    payload = json.loads(data)
    return StageOutput(
        results={i: {k: NegativeRecord.model_validate(r) for k, r in kinds.items()}
                 for i, kinds in payload["results"].items()},
        failures={i: Failure.model_validate(f) for i, f in payload["failures"].items()},
    )


# -- outcomes ---------------------------------------------------------------------------------


def encode_outcomes(outcomes: list[Outcome]) -> bytes:
    return "".join(o.model_dump_json() + "\n" for o in outcomes).encode("utf-8")


def decode_outcomes(data: bytes) -> Iterator[Outcome]:
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            yield Outcome.model_validate_json(line)
