"""TRL vision DPO export: conversational ``prompt``/``chosen``/``rejected`` + ``images``.

The layout follows TRL's "Dataset formats" guide (vision preference datasets) and
``HuggingFaceH4/rlaif-v_formatted``: ``images`` is a list of one ``Image`` and the
prompt is one user message whose content is an image placeholder followed by the
question::

    prompt   = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
    chosen   = [{"role": "assistant", "content": [{"type": "text", "text": y_w}]}]
    rejected = [{"role": "assistant", "content": [{"type": "text", "text": y_l}]}]

A record with a system prompt (a TRL input's system turn) gets it back as the first
message of the prompt, ``{"role": "system", "content": [{"type": "text", "text": s}]}``,
as in TRL's conversational format.

MFPO adds the image-side pair (sec. 3.1): ``rejected_images`` holds the one
perturbed image m_l, aligned with ``images`` (m_w), and ``id`` the record id. In
Arrow the content parts are ``{text, type}`` structs; the image part has
``text = null``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mfpo.schemas import ResultRecord

if TYPE_CHECKING:
    from datasets import Features

    from mfpo.exporters import DatasetImages


def trl_features() -> Features:
    """Features of the TRL export (``images``/``rejected_images``: lists of ``Image``)."""
    from datasets import Features, Image, Value

    part = {"text": Value("string"), "type": Value("string")}
    message = [{"content": [part], "role": Value("string")}]
    return Features(
        {
            "id": Value("string"),
            "prompt": message,
            "chosen": message,
            "rejected": message,
            "images": [Image()],
            "rejected_images": [Image()],
        }
    )


def conversation(role: str, text: str, with_image: bool = False) -> list[dict[str, Any]]:
    """One message in TRL's conversational form; ``with_image`` puts the placeholder first."""
    content: list[dict[str, Any]] = [{"text": None, "type": "image"}] if with_image else []
    content.append({"text": text, "type": "text"})
    return [{"content": content, "role": role}]


def trl_example(record: ResultRecord, images: DatasetImages) -> dict[str, Any]:
    """One TRL row of a record."""
    system = conversation("system", record.system) if record.system is not None else []
    return {
        "id": record.id,
        "prompt": system + conversation("user", record.question, with_image=True),
        "chosen": conversation("assistant", record.chosen),
        "rejected": conversation("assistant", record.rejected),
        "images": [images.struct(record, record.image)],
        "rejected_images": [images.struct(record, record.rejected_image)],
    }
