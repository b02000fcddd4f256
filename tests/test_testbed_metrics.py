"""Testbed metrics exact against the world's truth (CHAIR, POPE splits, short answers) and the report's statistics."""

from __future__ import annotations

import math

import pytest

from mfpo.testbed.config import WorldConfig
from mfpo.testbed.metrics import (
    answer_accuracy,
    attribute_questions,
    caption_metrics,
    pope_metrics,
    pope_questions,
    world_vocabulary,
)
from mfpo.testbed.report import cell, interval, paired
from mfpo.testbed.world import Group, caption, cooccurrence, kind_frequency, make_scene, scenes

WORLD = WorldConfig(sft_scenes=400, test_scenes=60)


@pytest.fixture(scope="module")
def test_scenes() -> list:  # type: ignore[type-arg]
    return list(scenes(WORLD, "test"))


def test_faithful_captions_score_zero_hallucination_and_full_recall(test_scenes: list) -> None:  # type: ignore[type-arg]
    m = caption_metrics([s.caption for s in test_scenes], test_scenes, WORLD)
    assert m["chair_s"] == 0 and m["chair_i"] == 0 and m["recall"] == 100 and m["prior_hallucination"] == 0
    assert m["prior_cases"] == sum(len(s.prior_absent) for s in test_scenes) > 0


def test_chair_counts_each_hallucinated_mention_exactly() -> None:
    s = next(x for x in (make_scene(WORLD, "test", i) for i in range(200)) if x.prior_absent and len(x.kinds) == 2)
    partner = s.prior_absent[0]
    wrong = caption([*s.groups, Group(partner, "red", 1)], WORLD.kinds)  # 2 true mentions + the partner
    half = caption(s.groups[:1], WORLD.kinds)  # one of two kinds
    m = caption_metrics([wrong, half], [s, s], WORLD)
    assert m["chair_s"] == 50.0
    assert m["chair_i"] == pytest.approx(100 * 1 / 4)
    assert m["recall"] == pytest.approx(100 * 3 / 4)
    assert m["prior_hallucination"] == 50.0  # the partner named in one of the two answers
    assert world_vocabulary(WORLD).node_of["fish"] == "fish" and world_vocabulary(WORLD).node_of["cups"] == "cup"


def test_pope_negatives_random_popular_and_adversarial(test_scenes: list) -> None:  # type: ignore[type-arg]
    freq, cooc = kind_frequency(WORLD), cooccurrence(WORLD)
    questions = pope_questions(test_scenes, WORLD, freq, cooc)
    by_scene: dict[str, list] = {}  # type: ignore[type-arg]
    for q in questions:
        by_scene.setdefault(q.scene, []).append(q)
        assert q.label == (q.kind in next(s for s in test_scenes if s.id == q.scene).kinds)
    for s in test_scenes:
        qs = by_scene[s.id]
        yes = [q for q in qs if q.label]
        assert {q.kind for q in yes} == s.kinds
        for split in ("random", "popular", "adversarial"):
            no = [q for q in qs if not q.label and split in q.splits]
            assert len(no) == min(len(s.kinds), len(WORLD.kinds) - len(s.kinds))
        adversarial = {q.kind for q in qs if not q.label and "adversarial" in q.splits}
        assert set(s.prior_absent) <= adversarial  # the partner of a present anchor is the hardest negative
        popular = {q.kind for q in qs if not q.label and "popular" in q.splits}
        absent = [k for k in WORLD.kinds if k not in s.kinds]
        assert min(freq[k] for k in popular) >= max((freq[k] for k in absent if k not in popular), default=0)


def test_pope_metrics_of_always_yes_and_perfect_answers(test_scenes: list) -> None:  # type: ignore[type-arg]
    questions = pope_questions(test_scenes, WORLD, kind_frequency(WORLD), cooccurrence(WORLD))
    always = pope_metrics(questions, ["Yes."] * len(questions))
    for split in ("random", "popular", "adversarial"):
        qs = [q for q in questions if split in q.splits]
        positives = sum(q.label for q in qs)
        assert always[split]["yes_ratio"] == 100.0
        assert always[split]["accuracy"] == pytest.approx(100 * positives / len(qs))
    perfect = pope_metrics(questions, ["Yes." if q.label else "No." for q in questions])
    assert perfect["mean"]["accuracy"] == 100.0 and perfect["mean"]["f1"] == 100.0
    with pytest.raises(ValueError):
        pope_metrics(questions, [])


def test_short_answer_accuracy(test_scenes: list) -> None:  # type: ignore[type-arg]
    questions = attribute_questions(test_scenes, WORLD, 2)
    assert {q.type for q in questions} == {"color", "count"}
    right = answer_accuracy(questions, [q.answer.upper() + " " for q in questions])
    assert right["all"] == 100.0
    wrong = answer_accuracy(questions, ["The cup is purple."] * len(questions))
    assert wrong["all"] < 20


def test_student_t_interval_and_cells() -> None:
    mean, half = interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(interval([5.0])[1])
    assert cell([5.0]) == "5.0" and cell([1.0, 2.0, 3.0]) == "2.0 ± 2.5"


def test_paired_verdicts_need_an_interval_that_excludes_zero() -> None:
    def runs(name: str, chair: list[float]) -> list[dict]:  # type: ignore[type-arg]
        return [{"seed": s, "metrics": {"captions": {"chair_i": v}}} for s, v in enumerate(chair)]

    columns = (("CHAIR_i", "lower", lambda m: m["captions"]["chair_i"]),)
    clear = paired({"mfpo": runs("mfpo", [5, 6, 7]), "dpo": runs("dpo", [10, 11, 12.5])}, "mfpo", "dpo", columns)
    assert clear["CHAIR_i"]["verdict"] == "better" and clear["CHAIR_i"]["mean"] < 0
    noisy = paired({"mfpo": runs("mfpo", [5, 15, 7]), "dpo": runs("dpo", [10, 5, 8])}, "mfpo", "dpo", columns)
    assert noisy["CHAIR_i"]["verdict"] == "same"
    worse = paired({"mfpo": runs("mfpo", [12, 13, 14]), "dpo": runs("dpo", [10, 11, 12.2])}, "mfpo", "dpo", columns)
    assert worse["CHAIR_i"]["verdict"] == "worse"
    probe = (("image reward margin", "-", lambda m: m["captions"]["chair_i"]),)
    assert paired({"mfpo": runs("mfpo", [5, 6, 7]), "dpo": runs("dpo", [10, 11, 12.5])}, "mfpo", "dpo",
                  probe)["image reward margin"]["verdict"] == "lower"  # differs, no better direction
    assert paired({"mfpo": runs("mfpo", [5, 15, 7]), "dpo": runs("dpo", [10, 5, 8])}, "mfpo", "dpo",
                  probe)["image reward margin"]["verdict"] == "same"
