"""LLaVA-Bench (in-the-wild / COCO): a judge scores the model's answer against a reference answer.

Reproduces LLaVA's ``eval_gpt_review_bench.py`` + ``summarize_gpt_review.py``: for each
question the judge sees the image context (its captions), the question, the reference answer
as "Assistant 1" and the model's answer as "Assistant 2", then the category's rule prompt
(``data/llava_bench_rules.json``, the ``llava_bench_{conv,detail,complex}`` entries of LLaVA's
``rule.json``), with the system message "You are a helpful and precise assistant for
checking the quality of the answer." at temperature 0.2. The first reply line holds the two
scores; the relative score of a category is mean(model) / mean(reference) x 100, over
``all`` too. Where the reference averages unparseable reviews in as (-1, -1), they are left
out here and counted in ``unparsed``.

Inputs: ``questions.jsonl`` (``question_id``, ``image``, ``text``, ``category``),
``context.jsonl`` (``image`` -> ``caption``, a string or a list of strings), the reference
answers (``answers_gpt4.jsonl``) and the model's answer file, both ``question_id`` -> ``text``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from mfpo.eval.judge import Judge, Message
from mfpo.eval.ratings import parse_score_pair
from mfpo.eval.reviews import ask_judge
from mfpo.eval.rows import RowsError, read_rows

SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
TEMPERATURE = 0.2


@lru_cache(maxsize=1)
def rules() -> dict[str, dict[str, str]]:
    """Rule (role, prompt) per ``llava_bench_<category>``."""
    text = resources.files("mfpo.eval").joinpath("data/llava_bench_rules.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


def review_messages(question: Mapping[str, Any], context: Mapping[str, Any], reference: str,
                    answer: str) -> list[Message]:
    """The judge's messages for one question (system + the reference's content layout)."""
    category = f"llava_bench_{question['category']}"
    if category not in rules():
        raise RowsError(f"LLaVA-Bench: unknown category {question['category']!r} (conv, detail, complex)")
    rule = rules()[category]
    caption = context["caption"]
    caption_text = "\n".join(caption) if isinstance(caption, list) else str(caption)
    role = rule["role"]
    content = (f"[Context]\n{caption_text}\n\n"
               f"[Question]\n{question['text']}\n\n"
               f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n"
               f"[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n"
               f"[System]\n{rule['prompt']}\n\n")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


def summarize_llava_bench(reviews: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Relative score (model / reference x 100) and both mean scores per category and ``all``."""
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in reviews:
        if r["scores"] is not None:
            pair = (float(r["scores"][0]), float(r["scores"][1]))
            pairs[str(r["category"])].append(pair)
            pairs["all"].append(pair)
    out: dict[str, Any] = {}
    for category in sorted(pairs):
        ref = sum(p[0] for p in pairs[category]) / len(pairs[category])
        model = sum(p[1] for p in pairs[category]) / len(pairs[category])
        out[category] = {"relative": 100.0 * model / ref if ref else 0.0, "reference": ref, "model": model,
                         "n": len(pairs[category])}
    return {"categories": out, "relative": out.get("all", {}).get("relative", 0.0),
            "unparsed": sum(r["scores"] is None for r in reviews), "n": len(reviews)}


def score_llava_bench(questions: Sequence[Mapping[str, Any]], contexts: Sequence[Mapping[str, Any]],
                      references: Sequence[Mapping[str, Any]], answers: Sequence[Mapping[str, Any]], judge: Judge,
                      cache_path: Path | None = None, temperature: float | None = None, max_tokens: int = 1024,
                      progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Reviews and summary of ``answers`` (see the module docstring)."""
    context_of = {str(c["image"]): c for c in contexts}
    ref_of = {str(r["question_id"]): str(r["text"]) for r in references}
    ans_of = {str(a["question_id"]): str(a["text"]) for a in answers}
    items = []
    for q in questions:
        qid = str(q["question_id"])
        if qid not in ans_of or qid not in ref_of or str(q["image"]) not in context_of:
            raise RowsError(f"LLaVA-Bench question {qid}: missing model answer, reference answer or context")
        items.append((qid, review_messages(q, context_of[str(q["image"])], ref_of[qid], ans_of[qid])))
    replies = ask_judge(items, judge, TEMPERATURE if temperature is None else temperature, max_tokens, cache_path,
                        progress)
    reviews = [{"question_id": qid, "category": q["category"], "scores": parse_score_pair(replies[qid]),
                "reply": replies[qid]} for (qid, _), q in zip(items, questions, strict=True)]
    return {**summarize_llava_bench(reviews), "reviews": reviews}


def score_llava_bench_files(questions: Path, context: Path, reference: Path, answers: Path, judge: Judge,
                            cache_path: Path | None = None, **options: Any) -> dict[str, Any]:
    """:func:`score_llava_bench` of the benchmark's files."""
    return score_llava_bench(read_rows(questions), read_rows(context), read_rows(reference), read_rows(answers),
                             judge, cache_path, **options)
