"""RLAIF-V layout export: ``openbmb/RLAIF-V-Dataset`` columns plus ``rejected_image``.

Columns as in the RLAIF-V dataset card (``dataset_info``): ``ds_name``, ``image``
(``Image``), ``question``, ``chosen``, ``rejected``, ``origin_dataset``,
``origin_split``, ``idx``, ``image_path`` (strings). Here ``ds_name`` and
``origin_dataset`` are ``"mfpo"``, ``idx`` is the record id, ``image_path`` the
image's path in the dataset folder and ``origin_split`` a JSON string of how the
rejected image was made (perturbation, keywords). ``rejected_image`` (``Image``) is
MFPO's perturbed image m_l (sec. 3.1). RLAIF-V training code that reads the known
columns by name keeps working; :mod:`mfpo.readers.rlaifv` reads the file back.
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
        }
    )


def rlaifv_example(record: ResultRecord, images: DatasetImages) -> dict[str, Any]:
    """One RLAIF-V row of a record."""
    meta = {
        "perturbation": record.perturbation.model_dump(mode="json"),
        "keywords": [k.text for k in record.keywords],
    }
    return {
        "ds_name": DS_NAME,
        "image": images.struct(record, record.image),
        "question": record.question,
        "chosen": record.chosen,
        "rejected": record.rejected,
        "origin_dataset": DS_NAME,
        "origin_split": json.dumps(meta, sort_keys=True),
        "idx": record.id,
        "image_path": record.image,
        "rejected_image": images.struct(record, record.rejected_image),
    }
