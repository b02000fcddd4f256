"""Reading a judge's verdict out of its reply text.

MMHal-Bench's ``eval_gpt4.py`` looks for the substrings ``rating: 0`` … ``rating: 6`` in the
lowercased reply and accepts the reply only when exactly one of them occurs (otherwise it
prints a warning and scores 0). Judges other than GPT-4 often write ``**Rating:** 5``,
``Rating: [5]``, or echo the rubric's option list before the verdict, so
:func:`parse_mmhal_rating` accepts those spellings and, when several different ratings
occur, takes the last one (the verdict follows the explanation, as the rubric asks); the
reply's status says which case it was.

LLaVA's ``eval_gpt_review_bench.py`` reads the first line of the reply as two numbers
separated by a space or a comma; :func:`parse_score_pair` does the same and, failing that,
accepts a first line with exactly two numbers in it ("Assistant 1: 7, Assistant 2: 8").
"""

from __future__ import annotations

import re

_RATING = re.compile(r"rating\s*\**\s*[:：]?\s*\**\s*\[?\s*([0-6])(?![0-9.])", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.]*\d)")


def parse_mmhal_rating(reply: str) -> tuple[int | None, str]:
    """(rating 0-6 or None, status): ``ok`` (one rating, as the reference accepts), ``last-of-many`` (several
    different ratings; the last is taken), or ``none`` (no rating; the reference scores such a reply 0)."""
    found = [int(m.group(1)) for m in _RATING.finditer(reply)]
    if not found:
        return None, "none"
    if len(set(found)) == 1:
        return found[0], "ok"
    return found[-1], "last-of-many"


def parse_score_pair(reply: str) -> tuple[float, float] | None:
    """The two scores on the first line of a LLaVA-Bench review, or None."""
    first = reply.strip().split("\n")[0] if reply.strip() else ""
    parts = first.replace(",", " ").split(" ")
    try:
        if len(parts) == 2:
            return float(parts[0]), float(parts[1])
    except ValueError:
        pass
    numbers = _NUMBER.findall(first.replace("Assistant 1", "").replace("Assistant 2", ""))
    if len(numbers) == 2:
        return float(numbers[0]), float(numbers[1])
    return None
