"""A benchmark's prompts: (id, question, image) from its official question file.

Field names differ per benchmark and are found in this order (or named explicitly):

- id: ``question_id`` (POPE, LLaVA-Bench), ``id`` (AMBER), ``image_id`` (Object HalBench,
  one question per image), else the row position (MMHal-Bench's ``response_template.json``);
- question: ``text`` (POPE, LLaVA-Bench), ``query`` (AMBER), ``question`` (MMHal-Bench,
  Object HalBench), ``prompt``;
- image: ``image`` (a file name, a path, or base64 as in RLAIF-V's
  ``obj_halbench_300_with_image.jsonl``), ``image_path``, ``image_file``, ``image_src``
  (MMHal-Bench's URLs: the file of that name is looked up in the image folder; nothing is
  downloaded).

Relative image paths are taken relative to ``image_dir`` (default: the prompt file's folder).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from mfpo.eval.rows import RowsError, first_field, read_rows, row_ids
from mfpo.images import ImageLimits, decode_image, load_image_bytes

QUESTION_KEYS = ("text", "query", "question", "prompt")
IMAGE_KEYS = ("image", "image_path", "image_file", "image_src")
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$")


@dataclass(frozen=True)
class BenchmarkPrompt:
    """One question of a benchmark: ``id`` (string), ``question``, ``image`` reference, and the row as read."""

    id: str
    question: str
    image: str
    fields: dict[str, Any] = field(default_factory=dict, compare=False)


def read_prompts(
    path: Path,
    id_key: str | None = None,
    question_key: str | None = None,
    image_key: str | None = None,
) -> list[BenchmarkPrompt]:
    """Every prompt of a benchmark question file (JSON array or JSON Lines), in file order."""
    rows = read_rows(path)
    ids = row_ids(rows, id_key, source=str(path))
    prompts = []
    for pid, row in zip(ids, rows, strict=True):
        question = first_field(row, (question_key,) if question_key else QUESTION_KEYS, "question", str(path))
        image = first_field(row, (image_key,) if image_key else IMAGE_KEYS, "image", str(path))
        if not isinstance(question, str) or not isinstance(image, str):
            raise RowsError(f"{path}: question and image of {pid!r} must be strings")
        prompts.append(BenchmarkPrompt(pid, question, image, dict(row)))
    return prompts


def image_reference(ref: str, image_dir: Path) -> str:
    """A reference :func:`mfpo.images.load_image_bytes` can open: a URL becomes the file of the same name in
    ``image_dir`` (never fetched), bare base64 becomes a data URI, a relative path is joined to ``image_dir``."""
    if ref.startswith(("http://", "https://")):
        name = Path(urllib.parse.urlparse(ref).path).name
        return str(Path(image_dir) / name)
    if len(ref) > 256 and _BASE64.match(ref[:4096]):
        return "data:image/jpeg;base64," + "".join(ref.split())
    return ref


def load_prompt_image(prompt: BenchmarkPrompt, image_dir: Path, limits: ImageLimits | None = None) -> Image.Image:
    """The RGB image of ``prompt`` (see :func:`image_reference`); raises :class:`mfpo.images.ImageError`."""
    limits = limits or ImageLimits()
    return decode_image(load_image_bytes(image_reference(prompt.image, image_dir), Path(image_dir), limits), limits)


def answer_fields(prompt: BenchmarkPrompt) -> dict[str, Any]:
    """The prompt's own fields to copy into its answer row (labels, image ids, categories), without an inline
    base64 image."""
    return {k: v for k, v in prompt.fields.items()
            if not (isinstance(v, str) and len(v) > 256 and v == prompt.image)}
