"""POPE (Li et al., 2023): accuracy, precision, recall, F1 and yes-ratio per split.

Reproduces POPE's ``evaluate.py`` (the same rule is in LLaVA's ``eval_pope.py``): an answer
is cut at its first ``.``, commas are removed, it is split on spaces, and it reads "no" if
one of the words is exactly ``No``, ``no`` or ``not`` — anything else, "NO", "don't" or an
empty answer included, reads "yes". "yes" is the positive class. Labels come from the split's
label file (``coco_pope_random.json`` etc.: JSON Lines of ``question_id``, ``image``, ``text``,
``label``); where the reference pairs answers and labels by line order, answers are matched by
``question_id`` here, and a split with unanswered questions is an error rather than a
silently shifted pairing. Metrics are percentages; precision of a split with no "yes" is 0
(the reference divides by zero).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mfpo.eval.binary import Confusion
from mfpo.eval.rows import RowsError, first_field, read_rows, row_ids

ANSWER_KEYS = ("text", "answer", "response")
NEGATIVE_WORDS = ("No", "not", "no")


def pope_says_yes(answer: str) -> bool:
    """POPE's reading of a free-form answer (see the module docstring)."""
    text = answer.split(".")[0] if "." in answer else answer
    words = text.replace(",", "").split(" ")
    return not any(w in NEGATIVE_WORDS for w in words)


def score_pope_split(answers: Sequence[Mapping[str, Any]], labels: Sequence[Mapping[str, Any]],
                     split: str = "split") -> dict[str, float | int]:
    """Metrics of one split: answers (``question_id`` + text) against its label rows."""
    by_id: dict[str, str] = {}
    for a in answers:
        if "question_id" not in a:
            raise RowsError(f"POPE {split}: an answer without question_id")
        by_id[str(a["question_id"])] = str(first_field(a, ANSWER_KEYS, "answer text", f"POPE {split} answers"))
    ids = row_ids(labels, "question_id", source=f"POPE {split} labels")
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise RowsError(f"POPE {split}: {len(missing)} of {len(ids)} questions have no answer (e.g. {missing[:5]})")
    confusion = Confusion()
    for qid, row in zip(ids, labels, strict=True):
        confusion.add(pope_says_yes(by_id[qid]), str(row["label"]).strip().lower() == "yes")
    m = confusion.metrics()
    return {"accuracy": m["accuracy"], "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
            "yes_ratio": m["positive_ratio"], "n": m["n"], "tp": confusion.tp, "fp": confusion.fp,
            "tn": confusion.tn, "fn": confusion.fn}


def split_name(label_path: Path) -> str:
    """``coco_pope_adversarial.json`` -> ``coco_adversarial``; other names: the file stem."""
    return Path(label_path).stem.replace("pope_", "")


def score_pope(splits: Mapping[str, tuple[Path, Path]]) -> dict[str, Any]:
    """Per split (name -> (answers file, label file)) metrics, and their mean over splits."""
    results = {name: score_pope_split(read_rows(answers), read_rows(labels), name)
               for name, (answers, labels) in splits.items()}
    if not results:
        raise ValueError("no POPE split to score")
    keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    mean = {k: sum(float(r[k]) for r in results.values()) / len(results) for k in keys}
    return {"splits": results, "mean": mean}
