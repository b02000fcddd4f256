"""RLAIF-V layout export: ``openbmb/RLAIF-V-Dataset`` columns plus ``rejected_image``, ``system`` and ``mfpo``.

Columns as in the RLAIF-V dataset card (``dataset_info``): ``ds_name``, ``image``
(``Image``), ``question``, ``chosen``, ``rejected``, ``origin_dataset``,
``origin_split``, ``idx``, ``image_path`` (strings). The provenance columns
(``ds_name``, ``origin_dataset``, ``origin_split``, ``idx``, ``image_path``) are the
input's own, from the record's ``source`` (an RLAIF-V or RLHF-V input keeps its values
unchanged); a record without them gets ``ds_name = origin_dataset = "mfpo"``, ``idx`` =
the record id, ``image_path`` = the image's path in the dataset folder and
``origin_split`` null. Ours go in their own columns: ``rejected_image`` (``Image``) is
MFPO's perturbed image m_l (sec. 3.1), ``system`` the system prompt (null if none), and
``mfpo`` a JSON string of how the rejected image was made: ``{"id", "image_path",
"perturbation", "keywords", "source"}`` (``source``: the record's whole provenance dict).
RLAIF-V training code that reads the known columns by name keeps working;
:mod:`mfpo.readers.rlaifv` reads the file back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mfpo.schemas import ResultRecord

if TYPE_CHECKING:
    from datasets import Features

    from mfpo.exporters import DatasetImages

DS_NAME = "mfpo"


def rlaifv_features() -> Features:
    """Features of the RLAIF-V export."""
    from datasets import Features, Image, Value

    return Features(
        {
            "ds_name": Value("string"),
            "image": Image(),
            "question": Value("string"),
            "chosen": Value("string"),
            "rejected": Value("string"),
            "origin_dataset": Value("string"),
            "origin_split": Value("string"),
            "idx": Value("string"),
            "image_path": Value("string"),
            "rejected_image": Image(),
            "system": Value("string"),
            "mfpo": Value("string"),
        }
    )


def rlaifv_example(record: ResultRecord, images: DatasetImages) -> dict[str, Any]:
    """One RLAIF-V row of a record: the input's provenance in RLAIF-V's columns, ours in ``mfpo``."""
    source = record.source or {}
    ours = {
        "id": record.id,
        "image_path": record.image,
        "perturbation": record.perturbation.model_dump(mode="json"),
        "keywords": [k.text for k in record.keywords],
        "source": record.source,
    }
    return {
        "ds_name": source.get("ds_name", DS_NAME),
        "image": images.struct(record, record.image),
        "question": record.question,
        "chosen": record.chosen,
        "rejected": record.rejected,
        "origin_dataset": source.get("origin_dataset", DS_NAME),
        "origin_split": source.get("origin_split"),
        "idx": source.get("idx", record.id),
        "image_path": source.get("image_path", record.image),
        "rejected_image": images.struct(record, record.rejected_image),
        "system": record.system,
        "mfpo": json.dumps(ours, sort_keys=True, ensure_ascii=False),
    }
