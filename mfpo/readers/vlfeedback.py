"""VLFeedback (``MMInstruction/VLFeedback``): 4 rated completions per prompt -> one pair.

Layout, from the dataset card (``dataset_info`` of README.md) and its loading script
``VLFeedback.py``: ``id`` (string), ``prompt`` (string), ``models`` (list of
strings), ``completions``: a list of ``{"model", "response", "annotations":
{"Helpfulness": {"Rating", "Rationale"}, "Visual Faithfulness": {...},
"Ethical Considerations": {...}}}`` with ratings stored as strings ("1".."5"),
and ``img_path`` (string, relative to the images folder). Parquet conversions may
carry an ``image`` struct instead; both are read. Item id: ``"vlfeedback-{id}"``.

Pair rule (:func:`select_pair`): a completion's score is the mean of its numeric
ratings over the aspects present (ratings that are not numbers, e.g. "N/A", are
skipped); completions with no numeric rating or an empty response take no part.
``chosen`` is the completion with the highest ``(mean, Visual Faithfulness)``,
``rejected`` the one with the lowest, Visual Faithfulness breaking ties of the mean
(a missing Visual Faithfulness rating counts as lowest); among exact ties the
earlier completion wins. A row whose eligible completions all score the same
(or with fewer than two of them) has no preference and becomes a Failure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mfpo.readers.base import ParsedRow, Row, RowError, dataset_id, image_field

FAITHFULNESS = "Visual Faithfulness"


@dataclass(frozen=True)
class ScoredCompletion:
    """One completion's response and ranking key ``(mean rating, Visual Faithfulness)``."""

    index: int
    response: str
    mean: float
    faithfulness: float

    @property
    def key(self) -> tuple[float, float]:
        return (self.mean, self.faithfulness)


def parse_vlfeedback_row(row: Row, index: int, base_dir: Path) -> ParsedRow:
    """Item fields from a VLFeedback row: the prompt and the selected pair."""
    item_id = dataset_id("vlfeedback", row.get("id"))
    try:
        image_value = row.get("image") if row.get("image") is not None else row.get("img_path")
        image, data = image_field(image_value, index, base_dir, column="img_path")
        completions = row.get("completions")
        if not isinstance(completions, Sequence) or isinstance(completions, (str, bytes)):
            raise RowError("completions: expected a list of rated completions")
        chosen, rejected = select_pair([score_completion(i, c) for i, c in enumerate(completions)])
    except RowError as exc:
        raise RowError(exc.reason, exc.stage, item_id) from exc
    fields = {"id": item_id, "image": image, "chosen": chosen.response, "rejected": rejected.response}
    if row.get("prompt") is not None:
        fields["question"] = row["prompt"]
    return ParsedRow(fields=fields, image_bytes=data)


def rating(value: object) -> float | None:
    """A numeric rating from ``"4"``, ``4`` or ``4.0``; None for "N/A", blanks, non-numbers."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def score_completion(index: int, completion: object) -> ScoredCompletion | None:
    """The completion's ranking key, or None when it cannot take part (no ratings/response)."""
    if not isinstance(completion, Mapping):
        return None
    response = completion.get("response")
    annotations = completion.get("annotations")
    if not isinstance(response, str) or not response.strip() or not isinstance(annotations, Mapping):
        return None
    ratings: dict[str, float] = {}
    for aspect, note in annotations.items():
        value = rating(note.get("Rating")) if isinstance(note, Mapping) else None
        if value is not None:
            ratings[str(aspect)] = value
    if not ratings:
        return None
    return ScoredCompletion(
        index=index,
        response=response,
        mean=sum(ratings.values()) / len(ratings),
        faithfulness=ratings.get(FAITHFULNESS, -math.inf),
    )


def select_pair(scored: Sequence[ScoredCompletion | None]) -> tuple[ScoredCompletion, ScoredCompletion]:
    """``(chosen, rejected)``: highest and lowest ``(mean, Visual Faithfulness)``; see module doc."""
    eligible = [s for s in scored if s is not None]
    if len(eligible) < 2:
        raise RowError(
            f"completions: {len(eligible)} of {len(scored)} completions have a response and a numeric "
            "rating; a pair needs two"
        )
    best = max(eligible, key=lambda s: (s.key, -s.index))
    worst = min(eligible, key=lambda s: (s.key, s.index))
    if best.key == worst.key:
        raise RowError(
            f"completions: all {len(eligible)} rated completions score the same (mean {best.mean:.2f}, "
            f"{FAITHFULNESS} {best.faithfulness:g}); no preference to learn"
        )
    return best, worst
