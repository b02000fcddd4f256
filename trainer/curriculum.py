"""Easy-to-hard curriculum (MFPO section 3.3): rank items by entropy, split into tertiles, train in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

STAGES: tuple[str, ...] = ("easy", "medium", "hard")
CurriculumMode = Literal["easy-to-hard", "none"]


def entropy_stages(ids: Sequence[str], entropies: Sequence[float]) -> dict[str, list[str]]:
    """Ids by stage: sorted by entropy ascending (ties by id), cut into three near-equal tertiles.

    With n items the stages get n // 3 (+1 for the first n % 3 stages) items each; low
    entropy (the reference model is confident) is easy.
    """
    if len(ids) != len(entropies):
        raise ValueError(f"{len(ids)} ids but {len(entropies)} entropies")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    order = [i for _, i in sorted(zip(entropies, ids, strict=True))]
    n = len(order)
    sizes = [n // 3 + (1 if k < n % 3 else 0) for k in range(3)]
    out: dict[str, list[str]] = {}
    start = 0
    for stage, size in zip(STAGES, sizes, strict=True):
        out[stage] = order[start : start + size]
        start += size
    return out


def stage_plan(
    ids: Sequence[str], entropies: Sequence[float], mode: CurriculumMode, epochs_per_stage: int
) -> list[tuple[str, list[str]]]:
    """The ordered (stage name, ids) blocks to train: easy, medium, hard (each epochs_per_stage times),
    or one block ``all`` of every id (``none``, the ablation)."""
    if epochs_per_stage < 1:
        raise ValueError("epochs_per_stage must be >= 1")
    if mode == "none":
        return [("all", list(ids))] * epochs_per_stage
    if mode != "easy-to-hard":
        raise ValueError(f"unknown curriculum {mode!r}; valid: easy-to-hard, none")
    stages = entropy_stages(ids, entropies)
    return [(s, stages[s]) for s in STAGES for _ in range(epochs_per_stage) if stages[s]]
