"""AMBER (Wang et al., 2023): generative CHAIR / Cover / Hal / Cog and discriminative accuracy / P / R / F1.

Reproduces AMBER's ``inference.py`` on its own files (``annotations.json``, ``relation.json``,
``safe_words.txt``; answers as ``[{"id", "response"}]`` or this package's answer files):

Generative items (``type == "generative"``): the nouns of the response (Penn tags ``NN*``,
lemmatized, case kept — "Trees" at a sentence start matches nothing, as in the reference)
that are in AMBER's vocabulary (every key and associated word of ``relation.json``) are
checked one by one: a global safe word is skipped; a word of the truth objects or their
associations marks that truth object covered; otherwise a word of the ``hallu`` objects or
their associations marks that object "cognitively" hallucinated, and the word itself counts
as hallucinated unless it is similar to a truth word. CHAIR = hallucinated words / vocabulary
nouns (safe words included), Cover = covered truth objects / truth objects, Hal = responses
with a hallucinated word, Cog = marked ``hallu`` objects / ``hallu`` objects — all in percent.
The reference's slot bookkeeping is kept exactly, quirks included: an association word marks
the *first* truth object that lists it, and a repeated truth object keeps a second slot that
nothing can mark.

Near-synonyms: the reference also treats spaCy ``en_core_web_lg`` similarity > 0.8 as a
match; that model is a download, so by default only exact words and ``relation.json``
associations match, and ``AmberConfig.similarity="minilm"`` uses the bundled MiniLM phrase
vectors instead (a stand-in with its own scale, not the reference's numbers).

Discriminative items: "No" is the positive class (precision = correct "No" / answered
"No", recall = correct "No" / truth "no"); per existence (``discriminative-hallucination``),
attribute (state + number + action, also reported separately) and relation, and overall.
The reference's 0.001 denominators and rounded inputs to F1 are not reproduced: values are
exact, and 0 where undefined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mfpo.eval.config import AmberConfig
from mfpo.eval.pope import pope_says_yes
from mfpo.eval.rows import RowsError, first_field, read_rows
from mfpo.eval.text import noun_lemma, pos_tags, word_tokenize

ID_KEYS = ("id", "question_id")
RESPONSE_KEYS = ("response", "text", "answer")
ATTRIBUTE_TYPES = ("discriminative-attribute-state", "discriminative-attribute-number",
                   "discriminative-attribute-action")
EXISTENCE_TYPE = "discriminative-hallucination"

Similar = Callable[[str, str], bool]


@dataclass(frozen=True)
class AmberData:
    """AMBER's annotation files, loaded."""

    annotations: Mapping[int, Mapping[str, Any]]
    association: Mapping[str, Sequence[str]]
    safe_words: frozenset[str]

    @property
    def vocabulary(self) -> frozenset[str]:
        return frozenset(self.association) | frozenset(w for ws in self.association.values() for w in ws)

    @classmethod
    def load(cls, annotations: Path, relation: Path, safe_words: Path) -> AmberData:
        import json

        rows = json.loads(Path(annotations).read_text(encoding="utf-8"))
        association = json.loads(Path(relation).read_text(encoding="utf-8"))
        safe = [line.split("\n")[0] for line in Path(safe_words).read_text(encoding="utf-8").splitlines()]
        return cls({int(r["id"]): r for r in rows}, association, frozenset(w for w in safe if w))


def response_nouns(response: str, vocabulary: frozenset[str]) -> list[str]:
    """Lemmatized nouns of ``response`` that are in AMBER's vocabulary, in order (``extract_nouns`` + filter)."""
    tokens = word_tokenize(response)
    nouns = [noun_lemma(w) for w, tag in zip(tokens, pos_tags(tokens), strict=True) if tag.startswith("NN")]
    return [n for n in nouns if n in vocabulary]


def _mark(slots: list[int], j: int, own: int) -> None:
    """inference.py's marking: an association word (before the last ``own`` slots) marks its object's slot."""
    if j < len(slots) - own:
        slots[slots[j] + len(slots) - own] = 1
    else:
        slots[j] = 1


def generative_item(nouns: Sequence[str], truth: Sequence[str], hallu: Sequence[str], data: AmberData,
                    similar: Similar) -> dict[str, Any]:
    """One generative response: which nouns are hallucinated, which truth / hallu objects are marked."""
    def words_and_slots(objects: Sequence[str]) -> tuple[list[str], list[int]]:
        words: list[str] = []
        slots: list[int] = []
        for idx, word in enumerate(objects):
            words += data.association.get(word, [])
            slots += [idx] * len(data.association.get(word, []))
        return words + list(objects), slots + [0] * len(objects)

    safe_words, safe_slots = words_and_slots(truth)
    ha_words, ha_slots = words_and_slots(hallu)
    flags = [0] * len(nouns)
    for idx, noun in enumerate(nouns):
        if noun in data.safe_words:
            continue
        if noun in safe_words:
            _mark(safe_slots, safe_words.index(noun), len(truth))
            continue
        if noun in ha_words:
            _mark(ha_slots, ha_words.index(noun), len(hallu))
        for j, word in enumerate(ha_words):
            if similar(noun, word):
                _mark(ha_slots, j, len(hallu))
                break
        near_truth = next((j for j, word in enumerate(safe_words) if similar(noun, word)), None)
        if near_truth is not None:
            _mark(safe_slots, near_truth, len(truth))
            continue
        flags[idx] = 1
    covered = safe_slots[len(safe_slots) - len(truth):]
    cognitive = ha_slots[len(ha_slots) - len(hallu):]
    return {"nouns": list(nouns), "hallucinated": [n for n, f in zip(nouns, flags, strict=True) if f],
            "covered": sum(covered), "truth": len(truth), "cognitive": sum(cognitive), "hallu": len(hallu),
            "covered_objects": [o for o, s in zip(truth, covered, strict=True) if s],
            "cognitive_objects": [o for o, s in zip(hallu, cognitive, strict=True) if s]}


@dataclass
class _Tally:
    """inference.py's counters for one group of yes/no questions."""

    n: int = 0
    correct: int = 0
    truth_no: int = 0
    answered_no: int = 0
    correct_no: int = 0

    def add(self, truth: str, answer: str | None) -> None:
        self.n += 1
        self.correct += answer == truth
        self.truth_no += truth == "no"
        self.answered_no += answer == "no"
        self.correct_no += truth == "no" and answer == "no"

    def merge(self, *others: _Tally) -> _Tally:
        out = _Tally()
        for t in (self, *others):
            for k in ("n", "correct", "truth_no", "answered_no", "correct_no"):
                setattr(out, k, getattr(out, k) + getattr(t, k))
        return out

    def metrics(self) -> dict[str, float | int]:
        p = self.correct_no / self.answered_no if self.answered_no else 0.0
        r = self.correct_no / self.truth_no if self.truth_no else 0.0
        return {"accuracy": 100.0 * self.correct / self.n if self.n else 0.0, "precision": 100.0 * p,
                "recall": 100.0 * r, "f1": 100.0 * 2 * p * r / (p + r) if p + r else 0.0, "n": self.n}


def read_yes_no(response: str, rule: str) -> str | None:
    """"yes" / "no" / None (unreadable) under ``rule`` (``AmberConfig.yes_no``)."""
    if rule == "pope":
        return "yes" if pope_says_yes(response) else "no"
    return {"Yes": "yes", "No": "no"}.get(response)


def _same(a: str, b: str) -> bool:
    return a == b


def minilm_similarity(threshold: float) -> Similar:
    """Cosine similarity of the bundled all-MiniLM-L6-v2 vectors above ``threshold``."""
    from mfpo.keywords.vectors import PhraseEmbedder

    embedder = PhraseEmbedder()

    def similar(a: str, b: str) -> bool:
        va, vb = embedder.embed([a, b])
        return bool(float(va @ vb) > threshold)

    return similar


def score_amber(answers: Sequence[Mapping[str, Any]], data: AmberData, config: AmberConfig | None = None,
                similar: Similar | None = None) -> dict[str, Any]:
    """Generative and discriminative AMBER metrics of ``answers`` (ids are AMBER's 1-based ids)."""
    config = config or AmberConfig()
    if similar is None:
        similar = minilm_similarity(config.similarity_threshold) if config.similarity == "minilm" else _same
    vocabulary = data.vocabulary
    chair_n = chair_h = covered = truth = cognitive = hallu = responses = hallucinated_responses = 0
    tallies: dict[str, _Tally] = {}
    unreadable = 0
    items = []
    for a in answers:
        aid = int(first_field(a, ID_KEYS, "id", "AMBER answers"))
        if aid not in data.annotations:
            raise RowsError(f"AMBER answer id {aid} is not in annotations.json")
        truth_row = data.annotations[aid]
        response = str(first_field(a, RESPONSE_KEYS, "response", "AMBER answers"))
        if truth_row["type"] == "generative":
            item = generative_item(response_nouns(response, vocabulary), truth_row["truth"], truth_row["hallu"],
                                   data, similar)
            chair_n += len(item["nouns"])
            chair_h += len(item["hallucinated"])
            covered, truth = covered + item["covered"], truth + item["truth"]
            cognitive, hallu = cognitive + item["cognitive"], hallu + item["hallu"]
            responses += 1
            hallucinated_responses += bool(item["hallucinated"])
            items.append({"id": aid, **item})
        else:
            answer = read_yes_no(response.strip() if config.yes_no == "pope" else response, config.yes_no)
            unreadable += answer is None
            tallies.setdefault(str(truth_row["type"]), _Tally()).add(str(truth_row["truth"]), answer)
            items.append({"id": aid, "type": truth_row["type"], "truth": truth_row["truth"], "answer": answer})
    out: dict[str, Any] = {}
    if responses:
        out["generative"] = {"chair": 100.0 * chair_h / chair_n if chair_n else 0.0,
                             "cover": 100.0 * covered / truth if truth else 0.0,
                             "hal": 100.0 * hallucinated_responses / responses,
                             "cog": 100.0 * cognitive / hallu if hallu else 0.0, "n": responses}
    if tallies:
        none = _Tally()
        attribute = none.merge(*(tallies.get(t, none) for t in ATTRIBUTE_TYPES))
        relation = none.merge(*(t for k, t in tallies.items() if k not in (*ATTRIBUTE_TYPES, EXISTENCE_TYPE)))
        out["discriminative"] = {
            "overall": none.merge(*tallies.values()).metrics(),
            "existence": tallies.get(EXISTENCE_TYPE, none).metrics(),
            "attribute": attribute.metrics(),
            "state": tallies.get(ATTRIBUTE_TYPES[0], none).metrics(),
            "number": tallies.get(ATTRIBUTE_TYPES[1], none).metrics(),
            "action": tallies.get(ATTRIBUTE_TYPES[2], none).metrics(),
            "relation": relation.metrics(),
            "unreadable": unreadable,
        }
    if "generative" in out and "discriminative" in out:  # AdaViP's AMBER Score
        out["amber_score"] = (100.0 - out["generative"]["chair"] + out["discriminative"]["overall"]["f1"]) / 2
    return {**out, "items": items}


def score_amber_files(answers: Path, annotations: Path, relation: Path, safe_words: Path,
                      config: AmberConfig | None = None) -> dict[str, Any]:
    """:func:`score_amber` of an answer file against AMBER's files."""
    return score_amber(read_rows(answers), AmberData.load(annotations, relation, safe_words), config)
