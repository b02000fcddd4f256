"""`mfpo synth`: deterministic scenes, exact annotations, one recorded hallucination per item."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfpo.config import UnknownOptionError
from mfpo.regions.masks import annotation_mask, mask_box, polygon_to_mask
from mfpo.schemas import PreferenceItem
from mfpo.synth import (
    KINDS,
    PALETTE,
    Group,
    Relation,
    SynthConfig,
    Wording,
    describe,
    generate_scenes,
    hallucinate,
    make_scene,
    render_object,
)

COUNT_WORDS = {"a", "an", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+|[^\sA-Za-z]", text)


def noun_forms(noun: str) -> set[str]:
    return {KINDS[noun].noun, KINDS[noun].plural}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_scenes(SynthConfig(n=24, seed=7, workers=1), out)
    return out


def test_same_seed_writes_same_bytes_whatever_the_worker_count(tmp_path: Path) -> None:
    one = generate_scenes(SynthConfig(n=32, seed=3, workers=1), tmp_path / "a").parent
    two = generate_scenes(SynthConfig(n=32, seed=3, workers=2), tmp_path / "b").parent
    files_one, files_two = tree_bytes(one), tree_bytes(two)
    assert len(files_one) == 32 + 2  # images + items.jsonl + truth.jsonl
    assert files_one == files_two
    other = generate_scenes(SynthConfig(n=2, seed=4, workers=1), tmp_path / "c").parent
    assert tree_bytes(other)["images/synth-4-00000.png"] != files_one["images/synth-3-00000.png"]


@pytest.mark.parametrize("noun", sorted(KINDS))
def test_every_kind_draws_a_solid_object_at_every_size(noun: str) -> None:
    kind = KINDS[noun]
    for size in (12, 17, 40, 101, 256):
        patch, mask, polygon = render_object(kind, size, PALETTE["blue"], np.random.default_rng(size))
        assert patch.shape[:2] == mask.shape and max(mask.shape) == size
        assert 0.3 < mask.mean() < 0.8
        assert (polygon is not None) == kind.polygon
        if polygon is not None:
            assert np.array_equal(polygon_to_mask(polygon, *mask.shape), mask)
        if size >= 40:  # the object mostly shows its named colour, not only outlines and fixed parts
            assert (patch[mask] == PALETTE["blue"]).all(axis=-1).mean() > 0.25


def test_scene_does_not_depend_on_n() -> None:
    small, large = SynthConfig(n=3, seed=5), SynthConfig(n=500, seed=5)
    a, b = make_scene(small, 2), make_scene(large, 2)
    assert np.array_equal(a.image, b.image) and a.chosen == b.chosen and a.rejected == b.rejected


def test_items_validate_and_reference_their_images(dataset: Path) -> None:
    items = read_jsonl(dataset / "items.jsonl")
    truth = read_jsonl(dataset / "truth.jsonl")
    assert [t["id"] for t in truth] == [i["id"] for i in items] == [f"synth-7-{k:05d}" for k in range(24)]
    for raw in items:
        item = PreferenceItem.model_validate(raw)
        assert item.image == f"images/{item.id}.png"
        with Image.open(dataset / item.image) as im:
            assert im.size == (512, 512) and im.mode == "RGB"
        assert item.chosen != item.rejected
        assert 2 <= len(item.annotations) <= 5
        assert {a.label for a in item.annotations} <= set(KINDS)
        shapes = {a.label: a.polygon is not None for a in item.annotations}
        assert all(shapes[k] == KINDS[k].polygon for k in shapes)


def test_annotations_are_exact_against_the_empty_background(dataset: Path) -> None:
    """Each object's mask: box = tight box, polygon = exact pixels; objects are where the image changed."""
    config = SynthConfig(n=24, seed=7)
    items = read_jsonl(dataset / "items.jsonl")
    truth = read_jsonl(dataset / "truth.jsonl")
    for index in range(0, 24, 3):
        scene = make_scene(config, index, keep_background=True)
        assert scene.background is not None
        on_disk = np.asarray(Image.open(dataset / items[index]["image"]))
        assert np.array_equal(on_disk, scene.image)
        changed = (scene.image != scene.background).any(axis=-1)
        union = np.zeros_like(changed)
        annotations = PreferenceItem.model_validate(items[index]).annotations
        assert len(annotations) == len(scene.objects)
        for ann, obj, fact in zip(annotations, scene.objects, truth[index]["objects"], strict=True):
            full = obj.full_mask(512, 512)
            union |= full
            assert ann.label == obj.kind == fact["noun"]
            assert np.array_equal(annotation_mask(ann, 512, 512), full) or ann.polygon is None
            x0, y0, x1, y1 = (int(v) for v in fact["box"])
            assert mask_box(full) == (x0, y0, x1, y1)
            if ann.box is not None:
                assert ann.box == (x0, y0, x1, y1)
            # tight: every edge row and column of the box holds a pixel of the object
            assert full[y0, x0:x1].any() and full[y1 - 1, x0:x1].any()
            assert full[y0:y1, x0].any() and full[y0:y1, x1 - 1].any()
            assert fact["visible"] >= config.min_visible
        # the picture differs from the empty background exactly on the objects' pixels
        assert np.array_equal(changed, union)


def test_box_of_an_unoccluded_object_is_the_box_of_the_changed_pixels(dataset: Path) -> None:
    config = SynthConfig(n=24, seed=7)
    checked = 0
    for index in range(24):
        scene = make_scene(config, index, keep_background=True)
        assert scene.background is not None
        changed = (scene.image != scene.background).any(axis=-1)
        boxes = [o.box for o in scene.objects]
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            a0, b0, a1, b1 = int(x0) - 2, int(y0) - 2, int(x1) + 2, int(y1) + 2
            alone = all(bx1 <= a0 or bx0 >= a1 or by1 <= b0 or by0 >= b1
                        for j, (bx0, by0, bx1, by1) in enumerate(boxes) if j != k)
            if not alone:
                continue
            window = np.zeros_like(changed)
            window[max(0, b0):b1, max(0, a0):a1] = True
            assert mask_box(changed & window) == (x0, y0, x1, y1)
            checked += 1
    assert checked >= 20


def test_rejected_differs_from_chosen_exactly_as_recorded() -> None:
    config = SynthConfig(n=80, seed=11)
    seen = set()
    for index in range(80):
        scene = make_scene(config, index)
        h = scene.truth()["hallucination"]
        seen.add(h["type"])
        a, b = words(scene.chosen), words(scene.rejected)
        matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
        ops = [op for op in matcher.get_opcodes() if op[0] != "equal"]
        assert ops, scene.id
        old = {w for _, i0, i1, _, _ in ops for w in a[i0:i1]}
        new = {w for _, _, _, j0, j1 in ops for w in b[j0:j1]}
        noun = h["noun"]
        if h["type"] == "object":
            assert h["to"] not in scene.truth()["nouns"] and h["from"] == noun
            assert old <= {"a", "an"} | noun_forms(noun) and new <= {"a", "an"} | noun_forms(h["to"])
            assert new & noun_forms(h["to"])
        elif h["type"] == "attribute":
            assert h["from"] in old <= {h["from"], "a", "an"} and h["to"] in new <= {h["to"], "a", "an"}
            assert not re.search(rf"\b{h['to']} ({'|'.join(noun_forms(noun))})\b", scene.chosen)
        else:
            assert h["type"] == "count" and abs(h["to"] - h["from"]) == 1 and h["to"] >= 1
            allowed = COUNT_WORDS | noun_forms(noun) | {"is", "are"}
            assert old <= allowed and new <= allowed
        assert len(ops) <= 3, (scene.chosen, scene.rejected)
    assert seen == {"object", "attribute", "count"}


def test_chosen_names_each_group_with_colour_and_count(dataset: Path) -> None:
    items, truths = read_jsonl(dataset / "items.jsonl"), read_jsonl(dataset / "truth.jsonl")
    for item, truth in zip(items, truths, strict=True):
        chosen = item["chosen"]
        for g in truth["groups"]:
            if g["count"] == 1:
                phrase = f"{'an' if g['color'][0] in 'aeiou' else 'a'} {g['color']} {g['noun']}"
            else:
                number = ["two", "three", "four", "five"][g["count"] - 2]
                phrase = f"{number} {g['color']} {KINDS[g['noun']].plural}"
            assert re.search(rf"\b{phrase}\b", chosen), (phrase, chosen)
        assert sum(g["count"] for g in truth["groups"]) == len(truth["objects"])
        assert truth["counts"] == {n: sum(o["noun"] == n for o in truth["objects"]) for n in truth["nouns"]}
        mentioned = {k for k in KINDS if re.search(rf"\b({'|'.join(noun_forms(k))})\b", chosen)}
        assert mentioned == set(truth["nouns"])
        colours = {c for c in PALETTE if re.search(rf"\b{c}\b", chosen)}
        assert colours == {o["color"] for o in truth["objects"]}
        assert any(w in chosen for w in ("picture", "scene", "image", "background"))
        rel = truth["relation"]
        if rel is not None:
            assert f"the {rel['a']} " in chosen.lower() and f"{rel['relation']} the {rel['b']}." in chosen


def test_relation_words_match_the_geometry() -> None:
    config = SynthConfig(seed=2)
    for index in range(30):
        scene = make_scene(config, index)
        if scene.relation is None:
            continue
        by_name = {(o.kind, o.color): o for o in scene.objects}
        a = by_name[(scene.groups[scene.relation.a].kind, scene.groups[scene.relation.a].color)]
        b = by_name[(scene.groups[scene.relation.b].kind, scene.groups[scene.relation.b].color)]
        (ax, ay), (bx, by) = a.center, b.center
        expected = {"to the left of": ax < bx, "to the right of": ax > bx, "above": ay < by, "below": ay > by}
        assert expected[scene.relation.words], (scene.id, scene.relation)


def test_describe_renders_groups_relation_and_background() -> None:
    groups = [Group("ball", "red", 2), Group("umbrella", "orange", 1), Group("car", "blue", 1)]
    text = describe(groups, Relation(1, 2, "to the left of"), Wording(intro=1, relation=0, closing=0,
                                                                        background="warm"))
    assert text == (
        "In this scene, there are two red balls, an orange umbrella and a blue car. "
        "The orange umbrella is to the left of the blue car. "
        "The background is a warm gradient with a subtle texture."
    )
    assert describe(groups[1:2], None, Wording(0, 0, None, "warm")) == "The picture shows an orange umbrella."


def test_hallucinate_changes_one_group_only() -> None:
    groups = [Group("ball", "red", 1), Group("car", "blue", 3)]
    outcomes = set()
    for seed in range(40):
        out, h = hallucinate(groups, None, np.random.default_rng(seed))
        changed = [i for i in range(2) if out[i] != groups[i]]
        assert len(changed) == 1
        g, new = groups[changed[0]], out[changed[0]]
        outcomes.add(h.type)
        if h.type == "object":
            assert new.kind not in {"ball", "car"} and (new.color, new.count) == (g.color, g.count)
        elif h.type == "attribute":
            assert new.color != g.color and (new.kind, new.count) == (g.kind, g.count)
        else:
            assert new.count in (g.count - 1, g.count + 1) and new.count >= 1
        assert h.noun == g.kind
    assert outcomes == {"object", "attribute", "count"}


def test_options_are_respected(tmp_path: Path) -> None:
    config = SynthConfig(n=6, seed=1, width=320, height=200, min_objects=3, max_objects=3, workers=1,
                         kinds=("car", "fish", "star"), colors=("red", "blue"), allow_overlap=False)
    generate_scenes(config, tmp_path)
    for truth in read_jsonl(tmp_path / "truth.jsonl"):
        assert len(truth["objects"]) == 3
        assert {o["noun"] for o in truth["objects"]} <= {"car", "fish", "star"}
        assert {o["color"] for o in truth["objects"]} <= {"red", "blue"}
        boxes = [o["box"] for o in truth["objects"]]
        for i, a in enumerate(boxes):
            assert 0 <= a[0] < a[2] <= 320 and 0 <= a[1] < a[3] <= 200
            assert all(b[2] <= a[0] or b[0] >= a[2] or b[3] <= a[1] or b[1] >= a[3] for b in boxes[i + 1:])
    with Image.open(tmp_path / "images" / "synth-1-00000.png") as im:
        assert im.size == (320, 200)


def test_bad_options_say_what_is_valid() -> None:
    with pytest.raises(UnknownOptionError, match=r"valid options: .*allow_overlap"):
        SynthConfig(n=3, colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"unknown kind.*valid kinds: ball, cup"):
        SynthConfig(kinds=("ball", "dragon"))
    with pytest.raises(ValueError, match=r"unknown colour.*'teal'"):
        SynthConfig(colors=("teal",))
    with pytest.raises(ValueError, match="min_objects"):
        SynthConfig(min_objects=4, max_objects=2)
    crowded = SynthConfig(min_objects=8, max_objects=8, min_size=0.9, max_size=0.9, allow_overlap=False,
                          max_attempts=5)
    with pytest.raises(ValueError, match="could not place 8 objects"):
        make_scene(crowded, 0)
