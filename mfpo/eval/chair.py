"""CHAIR (Rohrbach et al., 2018) for Object HalBench: CHAIR_s, CHAIR_i, object recall and answer length.

Reproduces ``chair.py`` of Rohrbach et al. (LisaAnne/Hallucination) as the standalone copy
that Object HalBench evaluations run (Maxlinn/CHAIR-metric-standalone and its many copies) does:

- vocabulary: ``data/chair_synonyms.txt`` (the reference ``synonyms.txt``: 80 COCO classes,
  first word of a line is the class), read as the reference reads it, ``line.strip().split(', ')``
  — so the two entries written with a double space (" motor bike", " cheesecake") never match,
  as in the reference;
- a text: lowercased, tokenized (``nltk.word_tokenize``), every token singularized (pattern),
  then two-word phrases merged left to right (``coco_double_words`` such as "hot dog",
  "teddy bear", "traffic light"; "baby/adult <animal>" -> the animal; "passenger jet/train"
  -> jet/train; "bow tie" -> tie; "toilet seat" -> toilet; "wine glas" -> "wine glass";
  "home plate" and "train track" kept as phrases that name no object), "seat" dropped when
  "toilet" is also in the text, and every remaining token that is a synonym mapped to its
  class ("man" -> person, "kitten" -> cat);
- ground truth per image: the classes of its COCO instance annotations plus the classes the
  same processing finds in its COCO reference captions;
- CHAIR_i = hallucinated mentions / all mentions (repeats count), CHAIR_s = answers with at
  least one hallucinated mention / answers, recall = ground-truth classes mentioned / ground-
  truth classes (summed over answers), length = mean whitespace-separated words per answer.

Rates are percentages. An answer whose image has no annotation at all is an error (wrong
annotation files), where the standalone copy would count every mention as hallucinated.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from mfpo.eval.config import ChairConfig
from mfpo.eval.rows import RowsError, first_field, read_rows
from mfpo.eval.text import noun_lemma, singularize_pattern, word_tokenize

COCO_DOUBLE_WORDS = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate", "train track",
)
ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal",
                "cub")
VEHICLE_WORDS = ("jet", "train")
TEXT_KEYS = ("text", "caption", "answer", "response", "model_answer")


@dataclass(frozen=True)
class ChairVocabulary:
    """COCO object words: every synonym -> its class, and the two-word phrases read as one word."""

    node_of: Mapping[str, str]
    double_words: Mapping[str, str]

    @property
    def classes(self) -> set[str]:
        return set(self.node_of.values())


@lru_cache(maxsize=1)
def chair_vocabulary() -> ChairVocabulary:
    """The reference synonym list and double-word rules (see the module docstring)."""
    text = resources.files("mfpo.eval").joinpath("data/chair_synonyms.txt").read_text(encoding="utf-8")
    node_of: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        synonyms = line.strip().split(", ")
        for s in synonyms:
            node_of[s] = synonyms[0]
    double = {w: w for w in COCO_DOUBLE_WORDS}
    for animal in ANIMAL_WORDS:
        double[f"baby {animal}"] = animal
        double[f"adult {animal}"] = animal
    for vehicle in VEHICLE_WORDS:
        double[f"passenger {vehicle}"] = vehicle
    double |= {"bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass"}
    return ChairVocabulary(node_of, double)


@dataclass(frozen=True)
class Mention:
    """An object word of a text and its COCO class."""

    word: str
    node: str


def object_mentions(text: str, config: ChairConfig | None = None,
                    vocabulary: ChairVocabulary | None = None) -> list[Mention]:
    """Every COCO object word in ``text``, in order, with its class (``caption_to_words`` of the reference)."""
    vocab = vocabulary or chair_vocabulary()
    single: Callable[[str], str] = (singularize_pattern if (config or ChairConfig()).singularize == "pattern"
                                    else noun_lemma)
    words = [single(w) for w in word_tokenize(text.lower())]
    merged: list[str] = []
    i = 0
    while i < len(words):
        pair = " ".join(words[i : i + 2])
        if pair in vocab.double_words:
            merged.append(vocab.double_words[pair])
            i += 2
        else:
            merged.append(words[i])
            i += 1
    if "toilet" in merged and "seat" in merged:  # "the seat of the toilet" is no chair
        merged = [w for w in merged if w != "seat"]
    return [Mention(w, vocab.node_of[w]) for w in merged if w in vocab.node_of]


def ground_truth_objects(
    image_ids: Iterable[Any],
    instances: Sequence[Mapping[str, Any]],
    captions: Sequence[Mapping[str, Any]],
    config: ChairConfig | None = None,
) -> dict[str, set[str]]:
    """COCO classes per image (string id): instance annotations + classes found in the reference captions.

    ``instances`` / ``captions`` are loaded COCO annotation files (``instances_*2014.json``,
    ``captions_*2014.json``); several of each (train + val) are merged. Only ``image_ids`` are kept.
    """
    wanted = {str(i) for i in image_ids}
    vocab = chair_vocabulary()
    objects: dict[str, set[str]] = defaultdict(set)
    for coco in instances:
        names = {c["id"]: c["name"] for c in coco.get("categories", [])}
        for ann in coco.get("annotations", []):
            if str(ann["image_id"]) in wanted:
                objects[str(ann["image_id"])].add(vocab.node_of[names[ann["category_id"]]])
    for coco in captions:
        for ann in coco.get("annotations", []):
            if str(ann["image_id"]) in wanted:
                objects[str(ann["image_id"])].update(m.node for m in object_mentions(ann["caption"], config))
    return dict(objects)


@dataclass
class ChairResult:
    """Summary (percentages, mean length) and per-answer details."""

    summary: dict[str, float | int]
    items: list[dict[str, Any]] = field(default_factory=list)


def score_chair(
    answers: Sequence[Mapping[str, Any]],
    gt_objects: Mapping[str, set[str]],
    config: ChairConfig | None = None,
    image_id_key: str = "image_id",
    text_keys: Sequence[str] = TEXT_KEYS,
    vocabulary: ChairVocabulary | None = None,
) -> ChairResult:
    """CHAIR_s, CHAIR_i, recall and length of ``answers`` (rows with an image id and an answer text).

    ``vocabulary``: the object words and their classes (default: COCO's, :func:`chair_vocabulary`); the
    hallucination testbed passes its world's nouns (:mod:`mfpo.testbed.metrics`)."""
    if not answers:
        raise ValueError("no answers to score")
    missing = sorted({str(a.get(image_id_key)) for a in answers if str(a.get(image_id_key)) not in gt_objects})
    if missing:
        raise RowsError(f"{len(missing)} answer image(s) have no COCO annotation (wrong instances/captions files?): "
                        f"{missing[:5]}")
    mentions_total = hallucinated_total = hallucinated_answers = 0
    recalled_total = gt_total = words_total = 0
    items = []
    for a in answers:
        text = str(first_field(a, text_keys, "answer text", "answers"))
        gt = gt_objects[str(a[image_id_key])]
        mentions = object_mentions(text, config, vocabulary)
        hallucinated = [m for m in mentions if m.node not in gt]
        recalled = {m.node for m in mentions if m.node in gt}
        mentions_total += len(mentions)
        hallucinated_total += len(hallucinated)
        hallucinated_answers += bool(hallucinated)
        recalled_total += len(recalled)
        gt_total += len(gt)
        words_total += len(text.split())
        items.append({"question_id": a.get("question_id"), "image_id": a[image_id_key],
                      "mentions": [[m.word, m.node] for m in mentions],
                      "hallucinated": [[m.word, m.node] for m in hallucinated], "gt_objects": sorted(gt),
                      "chair_s": int(bool(hallucinated)),
                      "chair_i": len(hallucinated) / len(mentions) if mentions else 0.0})
    n = len(answers)
    summary: dict[str, float | int] = {
        "chair_s": 100.0 * hallucinated_answers / n,
        "chair_i": 100.0 * hallucinated_total / mentions_total if mentions_total else 0.0,
        "recall": 100.0 * recalled_total / gt_total if gt_total else 0.0,
        "length": words_total / n,
        "answers": n,
        "mentions": mentions_total,
    }
    return ChairResult(summary, items)


def score_chair_files(
    answers_path: Path,
    instances_paths: Sequence[Path],
    captions_paths: Sequence[Path],
    config: ChairConfig | None = None,
    image_id_key: str = "image_id",
) -> ChairResult:
    """:func:`score_chair` of an answer file against COCO annotation files (JSON, as COCO ships them)."""
    import json

    answers = read_rows(answers_path)
    ids = [a.get(image_id_key) for a in answers]
    if any(i is None for i in ids):
        raise RowsError(f"{answers_path}: every answer needs an {image_id_key!r} field")
    load = [json.loads(Path(p).read_text(encoding="utf-8")) for p in instances_paths]
    caps = [json.loads(Path(p).read_text(encoding="utf-8")) for p in captions_paths]
    return score_chair(answers, ground_truth_objects(ids, load, caps, config), config, image_id_key)
