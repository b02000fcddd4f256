"""Hallucination metrics, exact against the world's truth, with :mod:`mfpo.eval`'s scorers (issue 16, item 5).

- Captions (Object HalBench / CHAIR, MFPO Tables 1, 4, 5, 7, 8): :func:`mfpo.eval.chair.score_chair` with the
  world's nouns as the vocabulary and the scene's kinds as the ground truth (exact: no annotator, no
  synonym list): CHAIR_s, CHAIR_i, recall (percent) and length. Besides, ``prior_hallucination``: of the
  test scenes where an anchor is present without its partner, the share of captions naming the partner
  (the hallucination the world's prior invites).
- POPE (Li et al. 2023): "Is there a {kind} in the picture?" for every present kind (label yes) and as
  many absent kinds (label no) drawn three ways: ``random`` (uniform), ``popular`` (the kinds most frequent
  in the SFT scenes) and ``adversarial`` (the kinds that co-occur most with the scene's kinds in the SFT
  scenes: the prior partners first). Answers are read by :func:`mfpo.eval.pope.pope_says_yes` and scored
  with :class:`mfpo.eval.binary.Confusion` (accuracy, precision, recall, F1, yes-ratio, percent).
- Short answers: accuracy of the colour and count questions (does the model see attributes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mfpo.eval.binary import Confusion
from mfpo.eval.chair import ChairVocabulary, score_chair
from mfpo.eval.pope import pope_says_yes
from mfpo.testbed.config import WorldConfig
from mfpo.testbed.world import Question, WorldScene, exist_question, plural, scene_questions

PopeSplit = Literal["random", "popular", "adversarial"]
POPE_SPLITS: tuple[PopeSplit, ...] = ("random", "popular", "adversarial")


def world_vocabulary(config: WorldConfig) -> ChairVocabulary:
    """CHAIR's vocabulary for the world: each kind's singular and plural name -> the kind."""
    node_of = {}
    for k in config.kinds:
        node_of[k] = k
        node_of[plural(k)] = k
    return ChairVocabulary(node_of=node_of, double_words={})


def caption_metrics(captions: Sequence[str], test: Sequence[WorldScene], config: WorldConfig) -> dict[str, Any]:
    """CHAIR_s, CHAIR_i, recall, length (score_chair) and prior_hallucination, all in percent but length."""
    if len(captions) != len(test):
        raise ValueError(f"{len(captions)} captions for {len(test)} scenes")
    vocab = world_vocabulary(config)
    answers = [{"image_id": s.id, "answer": c} for s, c in zip(test, captions, strict=True)]
    result = score_chair(answers, {s.id: s.kinds for s in test}, vocabulary=vocab)
    cases = named = 0
    for s, item in zip(test, result.items, strict=True):
        said = {node for _, node in item["mentions"]}
        for partner in s.prior_absent:
            cases += 1
            named += partner in said
    summary = {k: result.summary[k] for k in ("chair_s", "chair_i", "recall", "length")}
    return {**summary, "prior_hallucination": 100.0 * named / cases if cases else 0.0, "prior_cases": cases}


@dataclass(frozen=True)
class PopeQuestion:
    """One POPE question: its scene, kind, label, and the splits it belongs to."""

    id: str
    scene: str
    kind: str
    label: bool
    splits: tuple[PopeSplit, ...]

    @property
    def question(self) -> str:
        return exist_question(self.kind)


def pope_questions(test: Sequence[WorldScene], config: WorldConfig, frequency: Counter[str],
                   cooccurrence: Mapping[str, Counter[str]]) -> list[PopeQuestion]:
    """Every test scene's POPE questions: its present kinds (yes, in every split) and, per split, as many absent
    kinds (no) as the scene has present ones (fewer when fewer are absent). Seeded by the world."""
    out: list[PopeQuestion] = []
    order = {k: i for i, k in enumerate(config.kinds)}
    for s in test:
        rng = np.random.default_rng([config.seed, 11, s.index])
        present = sorted(s.kinds, key=order.__getitem__)
        absent = [k for k in config.kinds if k not in s.kinds]
        n = min(len(present), len(absent))
        picks: dict[PopeSplit, list[str]] = {
            "random": [absent[i] for i in rng.choice(len(absent), size=n, replace=False)] if n else [],
            "popular": sorted(absent, key=lambda k: (-frequency[k], order[k]))[:n],
            "adversarial": sorted(absent, key=lambda k: (-sum(cooccurrence[p][k] for p in present), order[k]))[:n],
        }
        for k in present:
            out.append(PopeQuestion(f"{s.id}/yes/{k}", s.id, k, True, POPE_SPLITS))
        for k in absent:
            splits = tuple(sp for sp in POPE_SPLITS if k in picks[sp])
            if splits:
                out.append(PopeQuestion(f"{s.id}/no/{k}", s.id, k, False, splits))
    return out


def pope_metrics(questions: Sequence[PopeQuestion], answers: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per split: accuracy, precision, recall, F1 and yes-ratio (percent), n; and their mean over splits."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(questions)} questions")
    out: dict[str, dict[str, float]] = {}
    for split in POPE_SPLITS:
        confusion = Confusion()
        for q, a in zip(questions, answers, strict=True):
            if split in q.splits:
                confusion.add(pope_says_yes(a), q.label)
        m = confusion.metrics()
        out[split] = {"accuracy": float(m["accuracy"]), "precision": float(m["precision"]),
                      "recall": float(m["recall"]), "f1": float(m["f1"]), "yes_ratio": float(m["positive_ratio"]),
                      "n": float(m["n"])}
    out["mean"] = {k: sum(out[s][k] for s in POPE_SPLITS) / len(POPE_SPLITS)
                   for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")}
    return out


def attribute_questions(test: Sequence[WorldScene], config: WorldConfig, per_scene: int = 2) -> list[Question]:
    """Colour and count questions about the test scenes (existence is POPE's), seeded by the world."""
    out = []
    for s in test:
        rng = np.random.default_rng([config.seed, 13, s.index])
        asked = [q for q in scene_questions(s, config, 4 * per_scene, rng) if q.type != "exist"]
        out += asked[:per_scene]
    return out


def answer_accuracy(questions: Sequence[Question], answers: Sequence[str]) -> dict[str, float]:
    """Exact-match accuracy (percent, case and surrounding space ignored) per question type and overall."""
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for q, a in zip(questions, answers, strict=True):
        ok = a.strip().lower() == q.answer.lower()
        for key in (q.type, "all"):
            totals[key] += 1
            hits[key] += ok
    return {k: 100.0 * hits[k] / totals[k] for k in totals}
