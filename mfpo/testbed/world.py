"""The testbed's world: procedural scenes with language priors and exact truth (issue 16, item 1).

Scenes are drawn by :mod:`mfpo.synth` (its object drawers, backgrounds and grain); what this module
adds is *which* objects a scene holds. A scene has ``min_groups``-``max_groups`` object kinds drawn
uniformly, each in one colour (drawn from ``colors``, or from the kind's own
``kind_colors``), once or (``two_prob``) twice. Then every :class:`~mfpo.testbed.config.Prior`
whose anchor is present tosses one coin: with its split's probability the partner is made present
(added), otherwise absent (replaced by a kind outside every prior, or dropped). So
P(partner | anchor) is exactly the split's value: 0.9 in the SFT scenes by default, 0.5 in the
preference and held-out test scenes (the prior is broken there). Captions list objects in the
world's kind order, the partner right after its anchor, so the caption's words carry the prior
("... a red cup, a blue ball ...") and a model that reads its own words more than the pixels
names the partner when it is absent.

Texts (one template each, so what the model must learn is the world, not the language):

- caption: question :data:`CAPTION_QUESTION`, answer "The picture shows a red cup, two blue balls and
  a green tree.";
- existence: "Is there a ball in the picture?" -> "Yes." / "No." (POPE's question form);
- colour: "What color is the cup?" -> "The cup is red." ("are" for two);
- count: "How many balls are there?" -> "There is one ball." / "There are two balls.".

The preference data's rejected caption adds one absent object to the faithful one: the prior's
partner when the anchor is there without it ("prior"), else a random absent kind ("object").

Every scene is a pure function of (world config, split, index); the three splits use disjoint
random streams.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mfpo.schemas import Annotation, PreferenceItem
from mfpo.synth import KINDS, PALETTE, SceneObject, SynthConfig, render_scene
from mfpo.testbed.config import WorldConfig

Split = Literal["sft", "preference", "test"]
SPLITS: tuple[Split, ...] = ("sft", "preference", "test")
_SPLIT_STREAM = {"sft": 1, "preference": 2, "test": 3}
QuestionType = Literal["caption", "exist", "color", "count"]

CAPTION_QUESTION = "Describe the picture."
_NUMBERS = ("zero", "one", "two", "three")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def plural(kind: str) -> str:
    return KINDS[kind].plural


@dataclass(frozen=True)
class Group:
    """One object kind of a scene: its colour and how many (1 or 2)."""

    kind: str
    color: str
    count: int = 1

    def phrase(self) -> str:
        """'a red cup', 'two red cups'."""
        if self.count == 1:
            return f"{_article(self.color)} {self.color} {self.kind}"
        return f"{_NUMBERS[self.count]} {self.color} {plural(self.kind)}"


def caption(groups: Sequence[Group], kinds: Sequence[str]) -> str:
    """The faithful caption: every group in the world's kind order."""
    ordered = sorted(groups, key=lambda g: kinds.index(g.kind))
    parts = [g.phrase() for g in ordered]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"The picture shows {listed}."


def exist_question(kind: str) -> str:
    return f"Is there {_article(kind)} {kind} in the picture?"


@dataclass
class Question:
    """A short question about a scene, its exact answer, and what it asks about."""

    type: QuestionType
    question: str
    answer: str
    kind: str
    scene: str = ""


@dataclass
class WorldScene:
    """One scene: pixels, objects (exact boxes / polygons), groups and its faithful caption."""

    id: str
    split: Split
    index: int
    image: npt.NDArray[np.uint8]
    objects: list[SceneObject]
    groups: list[Group]
    caption: str
    prior_absent: list[str] = field(default_factory=list)
    """Partners whose anchor is in the scene while they are not: where the prior misleads."""

    @property
    def kinds(self) -> set[str]:
        return {g.kind for g in self.groups}

    def annotations(self) -> list[Annotation]:
        return [o.annotation() for o in self.objects]

    def truth(self) -> dict[str, Any]:
        return {"id": self.id, "split": self.split, "kinds": sorted(self.kinds),
                "groups": [{"kind": g.kind, "color": g.color, "count": g.count} for g in self.groups],
                "prior_absent": self.prior_absent, "caption": self.caption}


def sample_groups(config: WorldConfig, split: Split, rng: np.random.Generator) -> list[Group]:
    """A scene's groups under the split's priors (see the module docstring); kind order as drawn."""
    kinds = list(config.kinds)
    k = int(rng.integers(config.min_groups, config.max_groups + 1))
    chosen = [kinds[i] for i in rng.choice(len(kinds), size=k, replace=False)]
    in_priors = {x for p in config.priors for x in (p.anchor, p.partner)}
    free = [x for x in kinds if x not in in_priors]
    for prior in config.priors:
        if prior.anchor not in chosen:
            continue
        want = bool(rng.random() < getattr(prior, split))
        if want and prior.partner not in chosen:
            chosen.append(prior.partner)
        elif not want and prior.partner in chosen:
            spare = [x for x in free if x not in chosen]
            at = chosen.index(prior.partner)
            if spare:
                chosen[at] = spare[int(rng.integers(len(spare)))]
            else:
                chosen.pop(at)
    groups = []
    for x in chosen:
        colors = config.colors_of(x)
        groups.append(Group(x, colors[int(rng.integers(len(colors)))], 2 if rng.random() < config.two_prob else 1))
    return groups


def scene_id(config: WorldConfig, split: Split, index: int) -> str:
    return f"world-{config.seed}-{split}-{index:05d}"


def synth_config(config: WorldConfig, objects: int) -> SynthConfig:
    """The :mod:`mfpo.synth` drawing options of a scene with ``objects`` objects."""
    return SynthConfig(width=config.image_size, height=config.image_size, seed=config.seed,
                       min_objects=objects, max_objects=max(objects, 1), min_size=config.min_size,
                       max_size=config.max_size, min_visible=config.min_visible, noise_std=config.noise_std,
                       max_attempts=500)


def _scene_rng(config: WorldConfig, split: Split, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, _SPLIT_STREAM[split], index])


def scene_groups(config: WorldConfig, split: Split, index: int) -> list[Group]:
    """The groups of scene ``index`` of ``split`` without drawing it (the first draws of :func:`make_scene`)."""
    return sample_groups(config, split, _scene_rng(config, split, index))


def make_scene(config: WorldConfig, split: Split, index: int) -> WorldScene:
    """Scene ``index`` of ``split``: a pure function of the three."""
    rng = _scene_rng(config, split, index)
    groups = sample_groups(config, split, rng)
    picked = [(g.kind, g.color) for g in groups for _ in range(g.count)]
    order = rng.permutation(len(picked))  # drawing order (which object is in front) is random
    picked = [picked[i] for i in order]
    image, _, objects, _ = render_scene(synth_config(config, len(picked)), rng, picked)
    if len(objects) != len(picked):  # place_objects gives up only after max_attempts per object
        raise RuntimeError(f"{scene_id(config, split, index)}: placed {len(objects)} of {len(picked)} objects")
    kinds = {g.kind for g in groups}
    absent = [p.partner for p in config.priors if p.anchor in kinds and p.partner not in kinds]
    return WorldScene(scene_id(config, split, index), split, index, image, objects, groups,
                      caption(groups, config.kinds), absent)


def scenes(config: WorldConfig, split: Split, n: int | None = None) -> Iterable[WorldScene]:
    """The first ``n`` scenes of ``split`` (default: the split's size in ``config``)."""
    count = n if n is not None else {"sft": config.sft_scenes, "preference": config.preference_scenes,
                                     "test": config.test_scenes}[split]
    for i in range(count):
        yield make_scene(config, split, i)


def scene_questions(scene: WorldScene, config: WorldConfig, n: int, rng: np.random.Generator) -> list[Question]:
    """``n`` short questions about ``scene`` with exact answers (types drawn uniformly; existence asks about a
    present or an absent kind with equal chance)."""
    out: list[Question] = []
    present = sorted(scene.kinds, key=config.kinds.index)
    absent = [k for k in config.kinds if k not in scene.kinds]
    by_kind = {g.kind: g for g in scene.groups}
    for _ in range(n):
        qtype = ("exist", "color", "count")[int(rng.integers(3))]
        if qtype == "exist":
            yes = not absent or rng.random() < 0.5
            pool = present if yes else absent
            kind = pool[int(rng.integers(len(pool)))]
            out.append(Question("exist", exist_question(kind), "Yes." if yes else "No.", kind, scene.id))
            continue
        g = by_kind[present[int(rng.integers(len(present)))]]
        if qtype == "color":
            if g.count == 1:
                out.append(Question("color", f"What color is the {g.kind}?", f"The {g.kind} is {g.color}.", g.kind,
                                    scene.id))
            else:
                out.append(Question("color", f"What color are the {plural(g.kind)}?",
                                    f"The {plural(g.kind)} are {g.color}.", g.kind, scene.id))
        else:
            answer = f"There is one {g.kind}." if g.count == 1 else f"There are two {plural(g.kind)}."
            out.append(Question("count", f"How many {plural(g.kind)} are there?", answer, g.kind, scene.id))
    return out


def hallucinated_caption(scene: WorldScene, config: WorldConfig, rng: np.random.Generator) -> tuple[str, str, str]:
    """(rejected caption, hallucinated kind, "prior" | "object"): the faithful caption plus one absent object,
    the prior's partner where the scene's anchor is without it, else a random absent kind; one, any colour."""
    if scene.prior_absent:
        kind, why = scene.prior_absent[int(rng.integers(len(scene.prior_absent)))], "prior"
    else:
        absent = [k for k in config.kinds if k not in scene.kinds]
        kind, why = absent[int(rng.integers(len(absent)))], "object"
    colors = config.colors_of(kind)
    color = colors[int(rng.integers(len(colors)))]
    return caption([*scene.groups, Group(kind, color, 1)], config.kinds), kind, why


def preference_item(scene: WorldScene, config: WorldConfig, image_ref: str) -> tuple[PreferenceItem, dict[str, Any]]:
    """The native-format preference item of a scene (exact annotations) and its truth line."""
    rng = np.random.default_rng([config.seed, 7, _SPLIT_STREAM[scene.split], scene.index])
    rejected, kind, why = hallucinated_caption(scene, config, rng)
    item = PreferenceItem(id=scene.id, image=image_ref, question=CAPTION_QUESTION, chosen=scene.caption,
                          rejected=rejected, annotations=scene.annotations())
    return item, {**scene.truth(), "hallucination": {"kind": kind, "type": why}}


def world_words(config: WorldConfig) -> list[str]:
    """Every word the world's texts use (lowercase and sentence-initial forms), for the tokenizer."""
    words = {"the", "picture", "shows", "a", "an", "and", "is", "there", "in", "what", "color", "are", "how",
             "many", "one", "two", "yes", "no", "describe"}
    for k in config.kinds:
        words |= {k, plural(k)}
    words |= set(config.all_colors)
    return sorted(words)


def _sft_kinds(config: WorldConfig, n: int | None) -> Iterable[set[str]]:
    for i in range(config.sft_scenes if n is None else n):
        yield {g.kind for g in scene_groups(config, "sft", i)}


def cooccurrence(config: WorldConfig, n: int | None = None) -> dict[str, Counter[str]]:
    """For every kind, how often each other kind shares an SFT scene with it (POPE's adversarial negatives)."""
    table: dict[str, Counter[str]] = {k: Counter() for k in config.kinds}
    for kinds in _sft_kinds(config, n):
        for a in kinds:
            for b in kinds:
                if a != b:
                    table[a][b] += 1
    return table


def kind_frequency(config: WorldConfig, n: int | None = None) -> Counter[str]:
    """How many SFT scenes hold each kind (POPE's popular negatives)."""
    counts: Counter[str] = Counter()
    for kinds in _sft_kinds(config, n):
        counts.update(kinds)
    return counts


__all__ = ["CAPTION_QUESTION", "PALETTE", "SPLITS", "Group", "Question", "WorldScene", "caption",
           "cooccurrence", "exist_question", "hallucinated_caption", "kind_frequency", "make_scene",
           "preference_item", "sample_groups", "scene_groups", "scene_questions", "scenes", "world_words"]
