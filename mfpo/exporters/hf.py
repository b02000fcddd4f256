"""Hugging Face ``datasets`` export: every record field, images as real ``Image`` features.

``image`` (m_w), ``rejected_image`` (m_l) and ``mask`` (the perturbed region, white
= noised) are ``datasets.Image``; ``keywords``, ``regions`` and ``perturbation``
keep the nested shape of :class:`~mfpo.schemas.ResultRecord` (``regions[].box`` is a
fixed-length list of 4 floats ``(x0, y0, x1, y1)`` in pixels). ``source_size`` is
``[width, height]`` or null, ``system`` a string or null, and ``source`` (the input's
provenance, a dict in the record) a list of ``{key, value}`` pairs, the portable shape of
a string map (``datasets`` has no map feature): ``dict((p["key"], p["value"]) for p in
row["source"])`` gives it back. Each rejected-image kind has its own ``Image`` column,
``rejected_image_{kind}`` (null where the job did not make it), ``rejected_mbpo`` is MBPO's
rejected answer, and ``negatives`` lists each kind's record (paths, fallback, details as JSON).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mfpo.negatives.config import NEGATIVE_KINDS
from mfpo.pipeline.dataset import parquet_row
from mfpo.schemas import ResultRecord

if TYPE_CHECKING:
    from datasets import Features

    from mfpo.exporters import DatasetImages


def hf_features() -> Features:
    """Features of the HF export."""
    from datasets import Features, Image, Sequence, Value

    return Features(
        {
            "id": Value("string"),
            "question": Value("string"),
            "chosen": Value("string"),
            "rejected": Value("string"),
            "image": Image(),
            "rejected_image": Image(),
            "mask": Image(),
            "keywords": [{"text": Value("string"), "score": Value("float64")}],
            "regions": [
                {
                    "keyword": Value("string"),
                    "box": Sequence(Value("float64"), length=4),
                    "source": Value("string"),
                    "area": Value("float64"),
                }
            ],
            "keywords_not_found": [Value("string")],
            "perturbation": {
                "mode": Value("string"),
                "noise_step": Value("int64"),
                "schedule": Value("string"),
                "seed": Value("int64"),
                "fallback": Value("bool"),
            },
            "source_size": Sequence(Value("int64"), length=2),
            "system": Value("string"),
            "source": [{"key": Value("string"), "value": Value("string")}],
            **{f"rejected_image_{kind}": Image() for kind in NEGATIVE_KINDS},
            "rejected_mbpo": Value("string"),
            "negatives": [
                {
                    "kind": Value("string"),
                    "image": Value("string"),
                    "mask": Value("string"),
                    "response": Value("string"),
                    "fallback": Value("string"),
                    "details": Value("string"),
                }
            ],
        }
    )


def hf_example(record: ResultRecord, images: DatasetImages) -> dict[str, Any]:
    """One HF row of a record."""
    row = parquet_row(record.model_dump(mode="json"))
    row["image"] = images.struct(record, record.image)
    row["rejected_image"] = images.struct(record, record.rejected_image)
    row["mask"] = images.struct(record, record.mask)
    for kind in NEGATIVE_KINDS:  # one image column per rejected-image kind (None where the job did not make it)
        negative = record.negatives.get(kind)
        row[f"rejected_image_{kind}"] = images.struct(record, negative.image) if negative is not None else None
    return row
