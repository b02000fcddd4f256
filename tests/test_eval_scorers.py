"""CHAIR, POPE and AMBER on fixture files in the official layouts, pinned to hand-computed numbers.

Each expected number is derived in the comments from the fixture text and the reference
scripts' rules (Rohrbach et al.'s chair.py, POPE's evaluate.py, AMBER's inference.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mfpo.eval.amber import AmberData, generative_item, score_amber, score_amber_files
from mfpo.eval.chair import chair_vocabulary, object_mentions, score_chair_files
from mfpo.eval.config import AmberConfig, ChairConfig
from mfpo.eval.pope import pope_says_yes, score_pope, score_pope_split, split_name
from mfpo.eval.rows import RowsError, read_rows

DATA = Path(__file__).parent / "data" / "eval"


def _words(text: str, **config: str) -> list[tuple[str, str]]:
    return [(m.word, m.node) for m in object_mentions(text, ChairConfig(**config))]


# --- CHAIR -----------------------------------------------------------------------------------


def test_chair_vocabulary_covers_the_80_coco_classes():
    vocab = chair_vocabulary()
    assert len(vocab.classes) == 80
    assert vocab.node_of["man"] == "person" and vocab.node_of["kitten"] == "cat" and vocab.node_of["table"] == \
        "dining table"
    # read as the reference reads synonyms.txt: the two double-spaced entries keep their leading space
    assert " motor bike" in vocab.node_of and "motor bike" not in vocab.node_of and " cheesecake" in vocab.node_of


def test_chair_mentions_follow_the_reference_rules():
    # plurals and synonyms: "men" -> man -> person, "puppies" -> puppy -> dog
    assert _words("Two men and their puppies.") == [("man", "person"), ("puppy", "dog")]
    # double words: "hot dogs" -> "hot dog", "teddy bears" -> "teddy bear", "baby elephant" -> elephant
    assert _words("Hot dogs, teddy bears and a baby elephant.") == [
        ("hot dog", "hot dog"), ("teddy bear", "teddy bear"), ("elephant", "elephant")]
    # "toilet seat" -> toilet, and any other "seat" in a text with a toilet is dropped (no chair)
    assert _words("The toilet seat is up; a cat sits on the seat.") == [("toilet", "toilet"), ("cat", "cat")]
    assert _words("A man on a seat.") == [("man", "person"), ("seat", "chair")]
    # pattern's singularize: "glasses" -> "glass", "glass" -> "glas", and the rule "wine glas" -> "wine glass"
    assert _words("Two wine glasses and a wine glass.") == [("wine glass", "wine glass")] * 2
    # its slip "bus" -> "bu" loses a singular bus (as in the reference); lemminflect keeps it
    assert _words("A bus.") == [] and _words("Two buses.") == [("bus", "bus")]
    assert _words("A bus.", singularize="lemminflect") == [("bus", "bus")]
    # the reference's dead entries: "motor bike" is merged but is no synonym; "train track" names no train
    assert _words("A motor bike near the train tracks and a train.") == [("train", "train")]
    # punctuation is split off, the sentence-final period too
    assert _words("A dog. A cat!") == [("dog", "dog"), ("cat", "cat")]


def test_chair_scores_fixture_answers():
    result = score_chair_files(DATA / "chair_answers.jsonl", [DATA / "coco_instances.json"],
                               [DATA / "coco_captions.json"])
    # ground truth: 101 {person, dog} + caption {person, dog, car}; 102 {dining table, cup} + caption {hot dog,
    # teddy bear, dining table}; 103 {toilet}; 104 {bus} (the caption's "bus" is lost to pattern's "bu").
    # mentions / hallucinated / recalled per answer:
    #   1: person, dog, car, bicycle / bicycle / 3 of 3     2: hot dog, dining table, teddy bear, wine glass /
    #   wine glass / 3 of 4     3: toilet, cat / cat / 1 of 1     4: elephant / elephant / 0 of 1 (bus lost)
    #   5: none / none / 0 of 1
    items = result.items
    assert [len(i["mentions"]) for i in items] == [4, 4, 2, 1, 0]
    assert [i["hallucinated"] for i in items] == [[["bicycle", "bicycle"]], [["wine glass", "wine glass"]],
                                                  [["cat", "cat"]], [["elephant", "elephant"]], []]
    assert items[0]["gt_objects"] == ["car", "dog", "person"]
    s = result.summary
    assert s["answers"] == 5 and s["mentions"] == 11
    assert s["chair_s"] == pytest.approx(100 * 4 / 5)       # answers 1-4 hallucinate
    assert s["chair_i"] == pytest.approx(100 * 4 / 11)      # 4 of 11 mentions
    assert s["recall"] == pytest.approx(100 * 7 / 10)       # (3 + 3 + 1 + 0 + 0) / (3 + 4 + 1 + 1 + 1)
    assert s["length"] == pytest.approx((12 + 17 + 12 + 6 + 2) / 5)


def test_chair_with_lemminflect_finds_the_singular_bus():
    result = score_chair_files(DATA / "chair_answers.jsonl", [DATA / "coco_instances.json"],
                               [DATA / "coco_captions.json"], ChairConfig(singularize="lemminflect"))
    # answer 4 now mentions bus (in the ground truth) and elephant: 12 mentions, 4 hallucinated, recall 8 / 10
    assert result.summary["mentions"] == 12
    assert result.summary["chair_i"] == pytest.approx(100 * 4 / 12)
    assert result.summary["recall"] == pytest.approx(80.0)


def test_chair_refuses_answers_for_unannotated_images(tmp_path):
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"image_id": 999, "text": "A dog."}) + "\n")
    with pytest.raises(RowsError, match="no COCO annotation"):
        score_chair_files(answers, [DATA / "coco_instances.json"], [DATA / "coco_captions.json"])


# --- POPE ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "yes"), [
    ("Yes, there is a dog in the image.", True),
    ("No.", False),
    ("There is no cat in the image.", False),
    ("I don't see a bicycle.", True),        # the reference knows no "don't"
    ("NO", True),                            # nor upper-case NO
    ("No, not at all. There is a dog.", False),
    ("Yes. There is no doubt.", True),       # only the first sentence counts
    ("", True),
])
def test_pope_reads_answers_like_the_reference(answer, yes):
    assert pope_says_yes(answer) is yes


def test_pope_scores_fixture_splits():
    result = score_pope({split_name(DATA / "coco_pope_random.json"): (DATA / "pope_random_answers.jsonl",
                                                                        DATA / "coco_pope_random.json"),
                         split_name(DATA / "coco_pope_popular.json"): (DATA / "pope_popular_answers.jsonl",
                                                                         DATA / "coco_pope_popular.json")})
    random = result["splits"]["coco_random"]
    # TP: q1, q6 ("NO" reads yes), q8; FN: q2; TN: q3, q7; FP: q4, q5 ("don't" reads yes)
    assert (random["tp"], random["fp"], random["tn"], random["fn"]) == (3, 2, 2, 1)
    assert random["accuracy"] == pytest.approx(62.5)
    assert random["precision"] == pytest.approx(60.0)
    assert random["recall"] == pytest.approx(75.0)
    assert random["f1"] == pytest.approx(100 * 2 * 0.6 * 0.75 / 1.35)
    assert random["yes_ratio"] == pytest.approx(62.5)
    popular = result["splits"]["coco_popular"]
    assert (popular["accuracy"], popular["f1"], popular["yes_ratio"]) == (100.0, 100.0, 50.0)
    assert result["mean"]["accuracy"] == pytest.approx(81.25)
    assert result["mean"]["f1"] == pytest.approx((200 / 3 + 100) / 2)


def test_pope_refuses_a_split_with_unanswered_questions():
    answers = read_rows(DATA / "pope_random_answers.jsonl")[:-1]
    with pytest.raises(RowsError, match="1 of 8 questions have no answer"):
        score_pope_split(answers, read_rows(DATA / "coco_pope_random.json"))


def test_pope_without_yes_answers_has_zero_precision():
    labels = [{"question_id": 1, "label": "yes"}, {"question_id": 2, "label": "no"}]
    m = score_pope_split([{"question_id": 1, "text": "No"}, {"question_id": 2, "text": "No"}], labels)
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"], m["yes_ratio"]) == (0.0, 0.0, 0.0, 50.0, 0.0)


# --- AMBER -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amber_data() -> AmberData:
    return AmberData.load(DATA / "amber_annotations.json", DATA / "amber_relation.json", DATA / "amber_safe_words.txt")


def test_amber_generative_items_follow_inference_py(amber_data):
    result = score_amber_files(DATA / "amber_answers.json", DATA / "amber_annotations.json",
                               DATA / "amber_relation.json", DATA / "amber_safe_words.txt")
    items = {i["id"]: i for i in result["items"]}
    # 1: nouns man, boat, sky, ship(s), bird, tree(s), light; light is a global safe word; man, sky are truth;
    # boat is an association of ship and marks the first "ship" slot, the repeated "ship" slot stays unmarked;
    # bird and tree are hallu objects -> hallucinated, and marked for Cog
    assert items[1]["nouns"] == ["man", "boat", "sky", "ship", "bird", "tree", "light"]
    assert items[1]["hallucinated"] == ["bird", "tree"]
    assert items[1]["covered_objects"] == ["sky", "man", "ship"] and items[1]["covered"] == 3
    assert items[1]["cognitive_objects"] == ["bird", "tree"]
    # 2: "ground" is first found as grass's association, so it marks grass (the reference's slot quirk), not
    # ground; woman is an association of the hallu object person; cat and woman are hallucinated
    assert items[2]["hallucinated"] == ["cat", "woman"]
    assert items[2]["covered_objects"] == ["grass", "dog"]
    assert items[2]["cognitive_objects"] == ["cat", "person"]
    # 10: "Trees" keeps its capital (the reference lemmatizes case-sensitively) and matches nothing
    assert items[10]["nouns"] == ["dog"] and items[10]["hallucinated"] == []
    g = result["generative"]
    assert g["n"] == 3
    assert g["chair"] == pytest.approx(100 * 4 / 12)     # 2 + 2 + 0 of 7 + 4 + 1 nouns
    assert g["cover"] == pytest.approx(100 * 6 / 9)      # 3 + 2 + 1 of 5 + 3 + 1 truth objects
    assert g["hal"] == pytest.approx(100 * 2 / 3)        # responses 1 and 2
    assert g["cog"] == pytest.approx(100 * 4 / 6)        # 2 + 2 + 0 of 3 + 2 + 1 hallu objects


def test_amber_discriminative_exact_answers(amber_data):
    result = score_amber(read_rows(DATA / "amber_answers.json"), amber_data)
    d = result["discriminative"]
    # correct: 3 (Yes/yes), 4 (No/no), 6 (No/no); 7 "no" and 8 "Yes, it is." are unreadable; "No" is positive:
    # answered No: 4, 5, 6; correct No: 4, 6; truth no: 4, 6, 7, 9
    assert d["unreadable"] == 2
    assert d["overall"]["accuracy"] == pytest.approx(100 * 3 / 7)
    assert d["overall"]["precision"] == pytest.approx(100 * 2 / 3)
    assert d["overall"]["recall"] == pytest.approx(50.0)
    assert d["overall"]["f1"] == pytest.approx(100 * 4 / 7)
    assert (d["existence"]["accuracy"], d["existence"]["f1"]) == (100.0, 100.0)
    assert d["attribute"]["accuracy"] == pytest.approx(100 / 3)
    assert (d["attribute"]["precision"], d["attribute"]["recall"], d["attribute"]["f1"]) == (50.0, 50.0, 50.0)
    assert (d["state"]["n"], d["number"]["n"], d["action"]["n"]) == (1, 1, 1)
    assert (d["relation"]["accuracy"], d["relation"]["precision"], d["relation"]["f1"]) == (0.0, 0.0, 0.0)
    assert result["amber_score"] == pytest.approx((100 - 100 * 4 / 12 + 100 * 4 / 7) / 2)


def test_amber_discriminative_with_pope_reading(amber_data):
    d = score_amber(read_rows(DATA / "amber_answers.json"), amber_data, AmberConfig(yes_no="pope"))["discriminative"]
    # 7 "no" -> no (correct), 8 "Yes, it is." -> yes (correct): 5 of 7 correct; answered No 4, 5, 6, 7; correct 3
    assert d["unreadable"] == 0
    assert d["overall"]["accuracy"] == pytest.approx(100 * 5 / 7)
    assert (d["overall"]["precision"], d["overall"]["recall"], d["overall"]["f1"]) == (75.0, 75.0, 75.0)
    assert d["attribute"]["f1"] == pytest.approx(80.0)   # P 2/3, R 2/2


def test_amber_similarity_is_pluggable(amber_data):
    # with a near-synonym "doggy" ~ "dog", the otherwise unknown-to-truth noun is not hallucinated
    data = AmberData(amber_data.annotations, {**amber_data.association, "doggy": []}, amber_data.safe_words)
    exact = generative_item(["doggy"], ["dog"], ["cat"], data, lambda a, b: a == b)
    near = generative_item(["doggy"], ["dog"], ["cat"], data, lambda a, b: {a, b} == {"doggy", "dog"} or a == b)
    assert exact["hallucinated"] == ["doggy"] and exact["covered"] == 0
    assert near["hallucinated"] == [] and near["covered_objects"] == ["dog"]


def test_amber_refuses_unknown_ids(amber_data):
    with pytest.raises(RowsError, match="not in annotations"):
        score_amber([{"id": 77, "response": "Yes"}], amber_data)



def test_amber_minilm_near_synonyms(amber_data):
    from mfpo.eval.amber import minilm_similarity

    similar = minilm_similarity(0.75)  # MiniLM cosines: dog~puppy 0.80, dog~cat 0.66, dog~airplane 0.34
    assert similar("dog", "puppy") and not similar("dog", "cat") and not similar("dog", "airplane")
    data = AmberData(amber_data.annotations, {**amber_data.association, "puppy": []}, amber_data.safe_words)
    exact = generative_item(["puppy", "cat"], ["dog"], ["cat"], data, lambda a, b: a == b)
    near = generative_item(["puppy", "cat"], ["dog"], ["cat"], data, similar)
    assert exact["hallucinated"] == ["puppy", "cat"] and exact["covered_objects"] == []
    assert near["hallucinated"] == ["cat"] and near["covered_objects"] == ["dog"]
    assert near["cognitive_objects"] == ["cat"]
