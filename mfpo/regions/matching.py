"""Which annotation labels a keyword names: lemma, then synonym, then embedding.

The ``annotations`` provider maps a keyword ("red cups") to the item's labelled
regions ("cup", "red cup", "mug", ...). Steps, from the most to the least precise;
the first step that matches anything decides:

1. :func:`match_by_lemma` - the keyword's core phrase lemma equals the label's
   ("red cups" ~ "a red cup"); failing that, the keyword's head noun equals the label's
   head and the label's modifiers do not contradict the keyword's ("cup" ~ "red cup";
   "red cup" ~ "cup", but not ~ "blue cup", and "bear" not ~ "teddy bear").
2. :func:`match_by_synonym` - the heads are synonyms or one is a listed hypernym of the
   other in :mod:`mfpo.lexicon` ("automobile" ~ "car", "man" ~ "person").
3. :func:`match_by_embedding` - the cosine of the MiniLM vectors of the core phrases is
   at least ``threshold``; only the best-scoring label text is kept. Labels that certainly
   name another object (:func:`mfpo.lexicon.distinct_objects`: two different COCO categories
   or two siblings in our tables, e.g. dog / cat at cosine 0.66, car / truck 0.69, boy / girl
   0.62) are never candidates, whatever their cosine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mfpo.keywords.vectors import Embedder
from mfpo.lexicon import core_phrase, distinct_objects, head_lemma, same_object_class


def _modifiers(core: str) -> set[str]:
    return set(core.split()[:-1])


def _contradicting_modifiers(a: str, b: str) -> bool:
    """Same head, and neither core phrase's modifiers contain the other's ("red cup" / "blue cup")."""
    if not a or not b or a.rsplit(" ", 1)[-1] != b.rsplit(" ", 1)[-1]:
        return False
    ma, mb = _modifiers(a), _modifiers(b)
    return not (ma <= mb or mb <= ma)


def match_by_lemma(keyword: str, labels: Sequence[str]) -> list[int]:
    """Indexes of labels with the keyword's lemma phrase, else of compatible same-head labels."""
    key = core_phrase(keyword)
    if not key:
        return []
    cores = [core_phrase(label) for label in labels]
    exact = [i for i, c in enumerate(cores) if c == key]
    if exact:
        return exact
    head, mods = key.rsplit(" ", 1)[-1], _modifiers(key)
    out = []
    for i, c in enumerate(cores):
        if not c or c.rsplit(" ", 1)[-1] != head:
            continue
        label_mods = _modifiers(c)
        # Compatible: one side's modifiers contain the other's ("cup" vs "red cup"), and the
        # modifier does not make it another object ("bear" vs "teddy bear").
        if (label_mods <= mods or mods <= label_mods) and not distinct_objects(key, c):
            out.append(i)
    return out


def match_by_synonym(keyword: str, labels: Sequence[str]) -> list[int]:
    """Indexes of labels whose head is another word for the keyword's head: a synonym, hypernym
    or hyponym ("automobile" ~ "car", "man" ~ "person"), never a different object."""
    head = head_lemma(keyword)
    if not head:
        return []
    return [
        i
        for i, label in enumerate(labels)
        if head_lemma(label)
        and head_lemma(label) != head  # same head: the lemma step decided (e.g. "red cup" vs "blue cup")
        and same_object_class(head, head_lemma(label))
        and not distinct_objects(keyword, label)
    ]


def match_by_embedding(keyword: str, labels: Sequence[str], embedder: Embedder, threshold: float) -> list[int]:
    """Indexes of the labels sharing the best cosine >= ``threshold`` to the keyword (MiniLM vectors),
    among the labels that do not certainly name another object."""
    key = core_phrase(keyword) or keyword.strip().lower()
    cores = [core_phrase(label) or label.strip().lower() for label in labels]
    usable = [
        i for i, c in enumerate(cores) if c and not distinct_objects(key, c) and not _contradicting_modifiers(key, c)
    ]
    if not key or not usable:
        return []
    unique = sorted({cores[i] for i in usable})
    vectors = embedder.embed([key, *unique])
    cos = vectors[1:] @ vectors[0]
    best = int(np.argmax(cos))
    if float(cos[best]) < threshold:
        return []
    return [i for i in usable if cores[i] == unique[best]]


def match_keyword(keyword: str, labels: Sequence[str], *, embedder: Embedder | None, threshold: float) -> list[int]:
    """Indexes of the labels ``keyword`` names, by the first step that finds any (see module doc).

    ``embedder=None`` skips the embedding step.
    """
    for hits in (match_by_lemma(keyword, labels), match_by_synonym(keyword, labels)):
        if hits:
            return hits
    if embedder is None:
        return []
    return match_by_embedding(keyword, labels, embedder, threshold)
