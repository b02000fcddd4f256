"""VLFeedback (``MMInstruction/VLFeedback``): 4 rated completions per prompt -> one pair.

Layout, from the dataset card (``dataset_info`` of README.md) and its loading script
``VLFeedback.py``: ``id`` (string), ``prompt`` (string), ``models`` (list of
strings), ``completions``: a list of ``{"model", "response", "annotations":
{"Helpfulness": {"Rating", "Rationale"}, "Visual Faithfulness": {...},
"Ethical Considerations": {...}}}`` with ratings stored as strings ("1".."5"),
and ``img_path`` (string, relative to the images folder). Parquet conversions may
carry an ``image`` struct instead; both are read. Item id: ``"vlfeedback-{id}"``.

``completions`` comes in two shapes, both read (:func:`completion_list`): the list of
completion objects of the loading script, and the *dict of lists* that Hugging Face
``datasets`` hands out, because the card declares ``completions`` as a ``sequence`` of
structs: ``{"annotations": [...], "model": [...], "response": [...]}`` (a row of
``load_dataset``, ``Dataset.to_json``, or the Parquet that ``datasets`` writes, where the
column is a struct of lists). The item's ``source`` keeps the row's ``id`` and the models
of the chosen and rejected completions.

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
        completions = completion_list(row.get("completions"))
        chosen, rejected = select_pair([score_completion(i, c) for i, c in enumerate(completions)])
    except RowError as exc:
        raise RowError(exc.reason, exc.stage, item_id) from exc
    fields = {"id": item_id, "image": image, "chosen": chosen.response, "rejected": rejected.response,
              "source": provenance(row, completions, chosen, rejected)}
    if row.get("prompt") is not None:
        fields["question"] = row["prompt"]
    return ParsedRow(fields=fields, image_bytes=data)


def completion_list(value: object) -> list[object]:
    """The completions as a list of completion objects, from either shape (module docstring).

    A dict of lists is turned into one dict per position; its columns must be lists of the same
    length (a null column counts as nulls), else the row fails with the reason.
    """
    if isinstance(value, Mapping):
        columns: dict[str, Sequence[object] | None] = {}
        for key, column in value.items():
            if column is not None and (not isinstance(column, Sequence) or isinstance(column, (str, bytes))):
                raise RowError(
                    f"completions: a dict of lists (the shape of Hugging Face datasets) needs a list under "
                    f"{key!r}, got {type(column).__name__}"
                )
            columns[str(key)] = column
        lengths = {len(c) for c in columns.values() if c is not None}
        if len(lengths) > 1:
            sizes = ", ".join(f"{k}: {len(c)}" for k, c in columns.items() if c is not None)
            raise RowError(f"completions: the lists of a dict of lists differ in length ({sizes})")
        count = lengths.pop() if lengths else 0
        return [{k: (c[i] if c is not None else None) for k, c in columns.items()} for i in range(count)]
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    raise RowError(
        "completions: expected a list of rated completions or a dict of lists "
        f"({{'annotations': [...], 'model': [...], 'response': [...]}}), got {type(value).__name__}"
    )


def provenance(row: Row, completions: Sequence[object], chosen: ScoredCompletion,
               rejected: ScoredCompletion) -> dict[str, str] | None:
    """The item's ``source``: the row's id and the models whose completions became the pair."""
    source: dict[str, str] = {}
    if row.get("id") is not None:
        source["id"] = str(row["id"])
    for key, scored in (("chosen_model", chosen), ("rejected_model", rejected)):
        completion = completions[scored.index]
        model = completion.get("model") if isinstance(completion, Mapping) else None
        if model is not None:
            source[key] = str(model)
    return source or None


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
