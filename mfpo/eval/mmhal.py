"""MMHal-Bench (Sun et al., 2023): a judge rates each answer 0-6 with the benchmark's own rubric.

Reproduces ``eval_gpt4.py`` of MMHal-Bench (the same file ships in LLaVA-RLHF as
``Eval/eval_gpt_mmhal.py``): the rubric prompt ``data/mmhal_rubric.txt`` filled with the
image contents (joined with ", "), the question, the standard human answer and the model's
answer, sent as one user message at temperature 0; score = mean rating, hallucination rate =
share of ratings below 3, and the mean rating per question type. The reference assumes the
96 records in their original order (type = position mod 8); here each record's own
``question_type`` is used. The rating is read with :func:`mfpo.eval.ratings.parse_mmhal_rating`;
a reply without one scores 0, as in the reference, and is counted in ``unparsed``.

Inputs: ``response_template.json`` (records with ``question_type``, ``image_content``,
``question``, ``gt_answer``) plus an answer file (``question_id`` -> ``text``), or a filled
template whose ``model_answer`` fields hold the answers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from mfpo.eval.judge import Judge
from mfpo.eval.ratings import parse_mmhal_rating
from mfpo.eval.reviews import ask_judge
from mfpo.eval.rows import RowsError, first_field, read_rows, row_ids

QUESTION_TYPES = ("attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic",
                  "other")
"""MMHal-Bench's eight question types, in the order of its records and of its per-type report."""
TEMPERATURE = 0.0


@lru_cache(maxsize=1)
def rubric() -> str:
    """MMHal-Bench's judge prompt with four ``{}`` slots: image contents, question, human answer, model answer."""
    return resources.files("mfpo.eval").joinpath("data/mmhal_rubric.txt").read_text(encoding="utf-8")


def mmhal_prompt(record: Mapping[str, Any]) -> str:
    """The filled rubric for one record (``image_content`` list, ``question``, ``gt_answer``, ``model_answer``)."""
    contents = record["image_content"]
    return rubric().format(", ".join(contents) if isinstance(contents, list) else str(contents),
                           record["question"], record["gt_answer"], record["model_answer"])


def fill_template(template: Sequence[Mapping[str, Any]], answers: Sequence[Mapping[str, Any]],
                  id_key: str | None = None) -> list[dict[str, Any]]:
    """Template records with ``model_answer`` from the answer file (joined on the template's ids) and an ``id``."""
    ids = row_ids(template, id_key, source="MMHal-Bench template")
    by_id = {str(a["question_id"]): str(first_field(a, ("text", "answer", "response", "model_answer"), "answer",
                                                    "MMHal-Bench answers")) for a in answers}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise RowsError(f"MMHal-Bench: {len(missing)} of {len(ids)} questions have no answer (e.g. {missing[:5]})")
    return [{**r, "id": i, "model_answer": by_id[i]} for i, r in zip(ids, template, strict=True)]


def judge_mmhal(records: Sequence[Mapping[str, Any]], judge: Judge, cache_path: Path | None = None,
                temperature: float | None = None, max_tokens: int = 1024,
                progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One review row per record: id, question_type, rating (None if unparsed), status, reply."""
    items = [(str(r.get("id", n)), [{"role": "user", "content": mmhal_prompt(r)}]) for n, r in enumerate(records)]
    replies = ask_judge(items, judge, TEMPERATURE if temperature is None else temperature, max_tokens, cache_path,
                        progress)
    reviews = []
    for (item_id, _), r in zip(items, records, strict=True):
        rating, status = parse_mmhal_rating(replies[item_id])
        reviews.append({"id": item_id, "question_type": r.get("question_type", "other"), "rating": rating,
                        "status": status, "reply": replies[item_id]})
    return reviews


def summarize_mmhal(reviews: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """score (mean 0-6), hal_rate (% of ratings < 3), per-type mean score, unparsed count, n."""
    if not reviews:
        raise ValueError("no MMHal-Bench reviews to summarize")
    scores = [int(r["rating"]) if r["rating"] is not None else 0 for r in reviews]
    by_type: dict[str, list[int]] = defaultdict(list)
    for r, s in zip(reviews, scores, strict=True):
        by_type[str(r["question_type"])].append(s)
    order = [t for t in QUESTION_TYPES if t in by_type] + sorted(t for t in by_type if t not in QUESTION_TYPES)
    return {"score": sum(scores) / len(scores), "hal_rate": 100.0 * sum(s < 3 for s in scores) / len(scores),
            "per_type": {t: sum(by_type[t]) / len(by_type[t]) for t in order},
            "unparsed": sum(r["rating"] is None for r in reviews),
            "multiple_ratings": sum(r["status"] == "last-of-many" for r in reviews), "n": len(reviews)}


def score_mmhal_files(answers: Path | None, template: Path, judge: Judge, cache_path: Path | None = None,
                      temperature: float | None = None, max_tokens: int = 1024, id_key: str | None = None,
                      progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Summary and reviews of an answer file (or of a filled template when ``answers`` is None)."""
    rows = read_rows(template)
    records = fill_template(rows, read_rows(answers), id_key) if answers is not None else \
        [{**r, "id": i} for i, r in zip(row_ids(rows, id_key, "MMHal-Bench responses"), rows, strict=True)]
    reviews = judge_mmhal(records, judge, cache_path, temperature, max_tokens, progress)
    return {**summarize_mmhal(reviews), "reviews": reviews}
