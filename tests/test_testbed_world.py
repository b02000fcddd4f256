"""The testbed's world (issue 16, item 1): exact priors, captions, questions, annotations, determinism."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mfpo.regions.masks import annotation_mask, mask_box
from mfpo.synth import SynthConfig, place_objects
from mfpo.testbed.config import Prior, WorldConfig
from mfpo.testbed.config import TestbedConfig as Config
from mfpo.testbed.world import (
    CAPTION_QUESTION,
    Group,
    caption,
    cooccurrence,
    hallucinated_caption,
    kind_frequency,
    make_scene,
    preference_item,
    scene_groups,
    scene_questions,
)

WORLD = WorldConfig(sft_scenes=3000, test_scenes=3000, preference_scenes=3000)


def conditional(world: WorldConfig, split: str, anchor: str, partner: str, n: int) -> tuple[int, int]:
    """(anchor scenes, anchor scenes with the partner) among the first n scenes of a split."""
    with_anchor = with_both = 0
    for i in range(n):
        kinds = {g.kind for g in scene_groups(world, split, i)}  # type: ignore[arg-type]
        if anchor in kinds:
            with_anchor += 1
            with_both += partner in kinds
    return with_anchor, with_both


@pytest.mark.parametrize(("split", "expected"), [("sft", 0.9), ("test", 0.5), ("preference", 0.5)])
def test_priors_hold_at_the_configured_rate(split: str, expected: float) -> None:
    for prior in WORLD.priors:
        n, both = conditional(WORLD, split, prior.anchor, prior.partner, 3000)
        assert n > 500
        rate = both / n
        assert abs(rate - expected) < 4 * (expected * (1 - expected) / n) ** 0.5 + 1e-9, (prior, split, rate)


def test_the_prior_is_a_language_prior_not_a_general_cooccurrence() -> None:
    """With the anchor the partner is (almost) always there; without it, it is a kind like the others."""
    without = sum("ball" in {g.kind for g in scene_groups(WORLD, "sft", i)}
                  for i in range(3000) if "cup" not in {g.kind for g in scene_groups(WORLD, "sft", i)})
    n_anchor, both = conditional(WORLD, "sft", "cup", "ball", 3000)
    assert without / (3000 - n_anchor) < 0.4 < 0.85 < both / n_anchor
    table = cooccurrence(WORLD, 3000)
    assert table["cup"].most_common(1)[0][0] == "ball"
    assert table["car"].most_common(1)[0][0] == "tree"
    freq = kind_frequency(WORLD, 3000)
    assert set(freq) == set(WORLD.kinds)
    assert both == table["cup"]["ball"]


def test_zero_and_one_priors_are_exact() -> None:
    world = WORLD.model_copy(update={"priors": (Prior(anchor="cup", partner="ball", sft=1.0, test=0.0),)})
    assert conditional(world, "sft", "cup", "ball", 400)[1] == conditional(world, "sft", "cup", "ball", 400)[0]
    assert conditional(world, "test", "cup", "ball", 400)[1] == 0


def test_scenes_are_pure_functions_of_config_split_and_index() -> None:
    a, b = make_scene(WORLD, "sft", 7), make_scene(WORLD, "sft", 7)
    assert np.array_equal(a.image, b.image) and a.caption == b.caption
    c = make_scene(WORLD, "test", 7)
    assert not np.array_equal(a.image, c.image)
    assert make_scene(WORLD.model_copy(update={"seed": 1}), "sft", 7).id != a.id
    assert scene_groups(WORLD, "sft", 7) == a.groups


def test_captions_name_every_group_in_kind_order_and_nothing_else() -> None:
    for i in range(40):
        s = make_scene(WORLD, "sft", i)
        words = re.findall(r"[a-z]+", s.caption.lower())
        named = [w for w in words if w in {k for k in WORLD.kinds} | {k + "s" for k in WORLD.kinds} | {"fish"}]
        kinds = [w[:-1] if w.endswith("s") and w[:-1] in WORLD.kinds else w for w in named]
        assert sorted(kinds, key=WORLD.kinds.index) == kinds
        assert set(kinds) == s.kinds
        for g in s.groups:
            assert g.color in s.caption
    assert caption([Group("ball", "red", 2), Group("cup", "blue")], WORLD.kinds) == \
        "The picture shows a blue cup and two red balls."


def test_objects_match_groups_and_annotations_are_exact() -> None:
    for i in range(20):
        s = make_scene(WORLD, "test", i)
        assert sorted(o.kind for o in s.objects) == sorted(g.kind for g in s.groups for _ in range(g.count))
        size = WORLD.image_size
        for o, ann in zip(s.objects, s.annotations(), strict=True):
            assert ann.label == o.kind
            pixels = o.full_mask(size, size)
            if ann.polygon is not None:  # star, box: the exact silhouette
                assert np.array_equal(annotation_mask(ann, size, size), pixels)
            else:  # the tight box of the object's pixels
                assert ann.box == mask_box(pixels)
        absent = [p.partner for p in WORLD.priors if p.anchor in s.kinds and p.partner not in s.kinds]
        assert s.prior_absent == absent


def test_place_objects_places_exactly_the_picked_objects() -> None:
    config = SynthConfig(width=96, height=96, min_objects=3, max_objects=3)
    picked = [("cup", "red"), ("ball", "blue"), ("cup", "red")]
    placed = place_objects(config, np.random.default_rng(0), picked)
    assert [(o.kind, o.color) for o in placed] == picked


def test_questions_have_exact_answers() -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for i in range(30):
        s = make_scene(WORLD, "sft", i)
        groups = {g.kind: g for g in s.groups}
        for q in scene_questions(s, WORLD, 4, rng):
            seen.add(q.type)
            assert q.scene == s.id
            if q.type == "exist":
                assert q.answer == ("Yes." if q.kind in s.kinds else "No.")
            elif q.type == "color":
                assert q.answer.endswith(f" {groups[q.kind].color}.")
            else:
                assert q.answer.startswith("There is one" if groups[q.kind].count == 1 else "There are two")
    assert seen == {"exist", "color", "count"}


def test_rejected_caption_adds_the_prior_partner_where_the_prior_misleads() -> None:
    prior_cases = other = 0
    for i in range(80):
        s = make_scene(WORLD, "preference", i)
        item, truth = preference_item(s, WORLD, f"images/{s.id}.png")
        assert item.question == CAPTION_QUESTION and item.chosen == s.caption and item.annotations
        kind = truth["hallucination"]["kind"]
        assert kind not in s.kinds
        if s.prior_absent:
            assert kind in s.prior_absent and truth["hallucination"]["type"] == "prior"
            prior_cases += 1
        else:
            other += 1
        rejected, _, _ = hallucinated_caption(s, WORLD, np.random.default_rng(0))
        assert len(rejected) > len(s.caption)
    assert prior_cases > 5 and other > 5


def test_bad_worlds_are_refused() -> None:
    with pytest.raises(ValueError, match="two priors"):
        WorldConfig(priors=(Prior(anchor="cup", partner="ball"), Prior(anchor="ball", partner="car")))
    with pytest.raises(ValueError, match="not one of the world's kinds"):
        WorldConfig(priors=(Prior(anchor="cup", partner="kite"),))
    with pytest.raises(ValueError, match="unknown runs"):
        Config(quick_runs=("nope",))


def test_kind_colors_draw_each_kind_in_its_own_colours() -> None:
    """The committed world gives every kind one colour (README, Testbed: how it was sized): scenes, the rejected
    caption's added object and the tokenizer's words follow it; other kinds keep every colour."""
    from mfpo.testbed.world import world_words

    world = Config().world
    assert set(world.kind_colors) == set(world.kinds)
    for i in range(40):
        s = make_scene(world, "preference", i)
        assert all(g.color == world.kind_colors[g.kind][0] for g in s.groups)
        assert all(o.color == world.kind_colors[o.kind][0] for o in s.objects)
        text, kind, _ = hallucinated_caption(s, world, np.random.default_rng(i))
        assert f"{world.kind_colors[kind][0]} {kind}" in text
    assert set(world.all_colors) <= set(world_words(world))
    partial = WorldConfig(kind_colors={"cup": ("black",)})
    assert partial.colors_of("cup") == ("black",) and partial.colors_of("ball") == partial.colors
    assert "black" in partial.all_colors
    with pytest.raises(ValueError):
        WorldConfig(kind_colors={"cup": ("mauve",)})
    with pytest.raises(ValueError):
        WorldConfig(kind_colors={"box": ("red",)})
