"""Candidate keywords of a chosen answer: noun phrases with their token positions.

MFPO section 3.1 builds its graph over "words" k_i with occurrence positions L(k_i);
following Boudin (2018), whose multipartite graph the paper adopts, the candidates are
noun phrases (adjective* noun+). Steps, one function each:

1. :func:`tokenize` - word/punctuation tokens; token index = position l.
2. :func:`pos_tag` - Penn tags from textblob's PatternTagger (ships its lexicon, needs no
   NLTK data), then :func:`repair_tags` fixes frequent noun/verb confusions.
3. :func:`noun_phrases` - maximal adjective* noun+ runs; stop modifiers, non-visual nouns
   and non-words break a run (:mod:`mfpo.lexicon` lists them).
4. :func:`is_negated` - a phrase right after "no"/"without"/"not (a)" names something the
   image does not show ("there are no people") and is dropped when every occurrence is.
5. :func:`select_candidates` - group occurrences by phrase lemma into :class:`Candidate`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from lemminflect import getAllLemmas

from mfpo.keywords.config import KeywordConfig
from mfpo.keywords.objectness import noun_kinds
from mfpo.lexicon import NON_VISUAL_NOUNS, PARTITIVE_NOUNS, STOP_MODIFIERS, lemma

_TOKEN = re.compile(
    r"[A-Za-z]+(?=n't\b)"  # "is" of "isn't"
    r"|n't\b|'(?:s|re|ve|ll|d|m)\b"  # clitics
    r"|[A-Za-z]+(?:[-'][A-Za-z]+)*"  # words, hyphenated words ("t-shirt")
    r"|\d+(?:[.,:]\d+)*"  # numbers
    r"|[^\sA-Za-z\d]",  # any other single character
)
_NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
_ADJ_TAGS = frozenset({"JJ", "JJR", "JJS"})
_VERB_AFTER_SUBJECT = frozenset({"VBZ", "VBD", "MD", "VBP"})
_OBJECT_START = frozenset({"DT", "PRP$", "CD"})
_SENTENCE_END = frozenset({".", "!", "?", ";", ":"})
_IMPERATIVE_OBJECT = frozenset({"that", "the", "a", "an", "how", "there", "this", "these"})
_BE_FORMS = frozenset({"is", "are", "was", "were", "be", "been", "being", "'s", "'re"})
_NEGATION_CUES = frozenset({"no", "without", "not", "n't", "nor", "neither"})
_NEGATION_SKIP = frozenset({"a", "an", "the", "any", "single", "visible", "other", "signs", "sign", "of"})
_WORDLIKE = re.compile(r"[a-z]+(?:[-'][a-z]+)*")


@dataclass(frozen=True)
class Candidate:
    """One candidate keyword k_i.

    text: surface form of its first occurrence, lowercased ("red cups");
    lemma: lemmatized phrase, the candidate's identity ("red cup");
    head: lemma of the head noun, the phrase's last word ("cup");
    positions: token index of the phrase's first word at every occurrence, ascending
    (the set L(k_i) of the paper's positional influence).
    """

    text: str
    lemma: str
    head: str
    positions: tuple[int, ...]

    @property
    def first_position(self) -> int:
        """l_i of the positional decay kappa: the first occurrence."""
        return self.positions[0]


@dataclass(frozen=True)
class Occurrence:
    """One noun-phrase occurrence: token span [start, end) and its words."""

    start: int
    end: int
    words: tuple[str, ...]


def tokenize(text: str) -> list[str]:
    """Split text into word, clitic, number and punctuation tokens (curly quotes normalized)."""
    return _TOKEN.findall(text.replace("’", "'").replace("‘", "'"))


@lru_cache(maxsize=1)
def _tagger() -> object:
    from textblob.en.taggers import PatternTagger

    return PatternTagger()


def pos_tag(tokens: Sequence[str]) -> list[str]:
    """Penn Treebank tags of pre-split tokens, one per token (PatternTagger + :func:`repair_tags`)."""
    if not tokens:
        return []
    tagged = _tagger().tag(" ".join(tokens), tokenize=False)  # type: ignore[attr-defined]
    if [w for w, _ in tagged] != list(tokens):
        raise ValueError(f"POS tagger changed the tokenization of {' '.join(tokens)[:200]!r}")
    return repair_tags(list(tokens), [t for _, t in tagged])


def prev_word(tokens: Sequence[str], i: int) -> str:
    """Lowercased token before ``i`` ("" at the start)."""
    return tokens[i - 1].lower() if i > 0 else ""


def next_word(tokens: Sequence[str], i: int) -> str:
    """Lowercased token after ``i`` ("" at the end)."""
    return tokens[i + 1].lower() if i + 1 < len(tokens) else ""


def _has_reading(word: str, upos: str) -> bool:
    return upos in getAllLemmas(word.lower())


def repair_tags(tokens: Sequence[str], tags: Sequence[str]) -> list[str]:
    """Fix the PatternTagger's frequent errors on image descriptions, left to right.

    Each rule uses lemminflect's lexicon to check that the new reading exists:
    1. verb after a determiner is a noun modifier: "a stop/VB sign" -> NN;
    2. verb between a singular noun and a finite verb is a noun: "teddy bear/VB sits" -> NN;
    3. plural noun between a noun and a determiner, or between a plural noun and a
       preposition/adverb, is a verb: "surfer rides/NNS a", "zebras grazes/NNS by" -> VBZ;
    4. participle between a determiner/adjective and a noun is an adjective: "a parked/VBN car";
    5. adjective with no adjective reading after a determiner, not before a noun or
       adjective, is a noun: "a t-shirt/JJ and" -> NN;
    6. sentence-initial noun before "that"/a determiner is an imperative: "Notice/NN that" -> VB;
    7. "-ing" noun after a form of "be" before an object is a verb: "is reading/NN a paper" -> VBG;
    8. "-ing" noun right after a noun is a participle unless the noun categories list it as a
       physical thing: "person skiing/NN" -> VBG, but "the old building" stays a noun.
    """
    out = list(tags)
    n = len(tokens)
    for i, (tok, tag) in enumerate(zip(tokens, out, strict=True)):
        prev = out[i - 1] if i > 0 else ""
        nxt = tags[i + 1] if i + 1 < n else "."
        if tag in {"VB", "VBP"} and prev in {"DT", "PRP$"} and _has_reading(tok, "NOUN"):
            out[i] = "NN"
        elif tag in {"VB", "VBP"} and prev == "NN" and nxt in _VERB_AFTER_SUBJECT and _has_reading(tok, "NOUN"):
            out[i] = "NN"
        elif tag == "NNS" and (
            (prev in _NOUN_TAGS and nxt in _OBJECT_START) or (prev in {"NNS", "NNPS"} and nxt in {"IN", "RB", "DT"})
        ) and _has_reading(tok, "VERB"):
            out[i] = "VBZ"
        elif (
            tag in _NOUN_TAGS
            and (i == 0 or tokens[i - 1] in _SENTENCE_END)
            and next_word(tokens, i) in _IMPERATIVE_OBJECT
            and _has_reading(tok, "VERB")
        ):
            out[i] = "VB"
        elif tag == "NN" and tok.lower().endswith("ing") and prev_word(tokens, i) in _BE_FORMS and (
            nxt in _OBJECT_START or nxt in _NOUN_TAGS | _ADJ_TAGS
        ):
            out[i] = "VBG"
        elif (
            tag == "NN"
            and tok.lower().endswith("ing")
            and prev in {"NN", "NNS"}
            and _has_reading(tok, "VERB")
            and noun_kinds().get(lemma(tok)) not in ("thing", "stuff")
        ):
            out[i] = "VBG"
        elif tag in {"VBN", "VBG"} and prev in (_ADJ_TAGS | {"DT", "PRP$"}) and nxt in _NOUN_TAGS:
            out[i] = "JJ"
        elif (
            tag in _ADJ_TAGS
            and prev in (_ADJ_TAGS | {"DT", "PRP$"})
            and nxt not in (_NOUN_TAGS | _ADJ_TAGS)
            and not _has_reading(tok, "ADJ")
        ):
            out[i] = "NN"
    return out


def _token_class(token: str, tag: str, config: KeywordConfig) -> str:
    """'N' noun, 'A' adjective, 'V' non-visual noun, 'X' other boundary (adjective* noun+ pattern)."""
    word = token.lower()
    if len(word) < config.min_word_chars or not _WORDLIKE.fullmatch(word):
        return "X"
    if word in config.extra_stopwords or lemma(word) in config.extra_stopwords:
        return "X"
    if tag in _NOUN_TAGS:
        return "V" if lemma(word) in NON_VISUAL_NOUNS else "N"
    if tag in _ADJ_TAGS:
        return "X" if word in STOP_MODIFIERS else "A"
    return "X"


def noun_phrases(tokens: Sequence[str], tags: Sequence[str], config: KeywordConfig) -> list[Occurrence]:
    """Maximal adjective* noun+ runs, trimmed to ``config.max_phrase_words`` from the left.

    A run longer than the limit keeps its last words (the head noun and nearest
    modifiers); runs shorter than ``config.min_phrase_words`` are dropped. A run that
    continues into a non-visual noun modifies it and is dropped ("a sandy gradient",
    "a cozy atmosphere"); one that follows it is kept ("background trees" -> "trees"). A run
    headed by a partitive noun before "of" is dropped: "a herd of zebras" names the zebras
    (:data:`mfpo.lexicon.PARTITIVE_NOUNS`; ours, not the paper's).
    """
    classes = "".join(_token_class(t, g, config) for t, g in zip(tokens, tags, strict=True))
    out = []
    for m in re.finditer(r"A*N+", classes):
        start, end = m.start(), m.end()
        if end < len(classes) and classes[end] == "V":
            continue
        if lemma(tokens[end - 1]) in PARTITIVE_NOUNS and next_word(tokens, end - 1) == "of":
            continue
        start = max(start, end - config.max_phrase_words)
        if end - start < config.min_phrase_words:
            continue
        out.append(Occurrence(start, end, tuple(t.lower() for t in tokens[start:end])))
    return out


def is_negated(tokens: Sequence[str], start: int) -> bool:
    """True if the phrase starting at token ``start`` follows a negation cue.

    The cue ("no", "without", "not", "n't", "nor", "neither") may be separated from the
    phrase only by articles and a few fillers ("there are no visible people", "not a
    single car"); a verb in between ("not wearing a hat") keeps the phrase.
    """
    i = start - 1
    while i >= 0 and tokens[i].lower() in _NEGATION_SKIP:
        i -= 1
    return i >= 0 and tokens[i].lower() in _NEGATION_CUES


def select_candidates(text: str, config: KeywordConfig | None = None) -> list[Candidate]:
    """Candidate keywords of ``text``, ordered by first position (MFPO sec. 3.1, Boudin 2018).

    Occurrences whose lemmatized phrase is equal are one candidate with several
    positions. With ``config.drop_negated``, a candidate all of whose occurrences are
    negated is dropped.
    """
    config = config or KeywordConfig()
    tokens = tokenize(text)
    tags = pos_tag(tokens)
    grouped: dict[str, list[Occurrence]] = {}
    for occ in noun_phrases(tokens, tags, config):
        grouped.setdefault(" ".join(lemma(w) for w in occ.words), []).append(occ)
    out = []
    for key, occs in grouped.items():
        if config.drop_negated and all(is_negated(tokens, o.start) for o in occs):
            continue
        out.append(
            Candidate(
                text=" ".join(occs[0].words),
                lemma=key,
                head=key.rsplit(" ", 1)[-1],
                positions=tuple(o.start for o in occs),
            )
        )
    return sorted(out, key=lambda c: c.first_position)
