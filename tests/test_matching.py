"""Annotation matching (mfpo.regions.matching): which labels a keyword names, table-driven.

Every pair is run through the full matcher with the shipped MiniLM at the default
threshold (RegionsConfig.match_threshold = 0.6), so an embedding cosine above the
threshold cannot sneak a different object in.
"""

from __future__ import annotations

import pytest

from mfpo.keywords import get_embedder
from mfpo.lexicon import distinct_objects, hypernyms
from mfpo.regions.config import RegionsConfig
from mfpo.regions.matching import match_by_embedding, match_keyword

THRESHOLD = RegionsConfig().match_threshold

SAME_OBJECT = [
    ("cup", "mug"),
    ("mugs", "a cup"),
    ("man", "person"),
    ("person", "woman"),
    ("people", "person"),
    ("sofa", "couch"),
    ("automobile", "car"),
    ("red car", "car"),
    ("puppy", "dog"),
    ("pigeon", "bird"),
    ("pigeon", "animal"),
    ("tv", "television"),
    ("brown teddy bear", "teddy bear"),
    ("laptop", "laptop computer"),
]

DIFFERENT_OBJECTS = [
    ("dog", "cat"),
    ("car", "truck"),
    ("boy", "girl"),
    ("man", "woman"),
    ("skateboard", "surfboard"),
    ("sofa", "chair"),
    ("couch", "chair"),
    ("bear", "teddy bear"),
    ("teddy bear", "bear"),
    ("horse", "cow"),
    ("fork", "knife"),
    ("bus", "train"),
    ("laptop", "keyboard"),
    ("snowboard", "skis"),
    ("bicycle", "motorcycle"),
    ("red cup", "blue cup"),
]


@pytest.fixture(scope="module")
def embedder():
    return get_embedder()


@pytest.mark.parametrize(("keyword", "label"), SAME_OBJECT)
def test_names_of_one_object_match(keyword, label, embedder):
    assert match_keyword(keyword, [label], embedder=embedder, threshold=THRESHOLD) == [0]
    assert not distinct_objects(keyword, label)


@pytest.mark.parametrize(("keyword", "label"), DIFFERENT_OBJECTS)
def test_different_objects_never_match(keyword, label, embedder):
    assert match_keyword(keyword, [label], embedder=embedder, threshold=THRESHOLD) == []
    assert match_keyword(label, [keyword], embedder=embedder, threshold=THRESHOLD) == []


@pytest.mark.parametrize(("keyword", "label"), [("dog", "cat"), ("car", "truck"), ("boy", "girl")])
def test_the_guard_not_the_threshold_rejects_close_siblings(keyword, label, embedder):
    # the cosine alone would pass the threshold (the audit measured 0.66, 0.69, 0.62)
    vectors = embedder.embed([keyword, label])
    assert float(vectors[0] @ vectors[1]) >= THRESHOLD
    assert match_by_embedding(keyword, [label], embedder, THRESHOLD) == []


def test_best_allowed_label_wins_among_several(embedder):
    labels = ["cat", "truck", "dog"]
    assert match_keyword("puppy", labels, embedder=embedder, threshold=THRESHOLD) == [2]
    assert match_keyword("kitten", labels, embedder=embedder, threshold=THRESHOLD) == [0]
    assert match_keyword("giraffe", labels, embedder=embedder, threshold=THRESHOLD) == []


def test_unknown_names_still_use_the_embedding(embedder):
    # neither word is in our tables, so nothing is certain and the cosine decides
    assert not distinct_objects("kayak", "canoe")
    assert match_keyword("kayak", ["canoe", "giraffe"], embedder=embedder, threshold=THRESHOLD) == [0]


def test_hypernyms_are_transitive():
    assert hypernyms("pigeon") == {"bird", "animal"}
    assert hypernyms("boy") == {"person"}
