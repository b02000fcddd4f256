"""Which annotation labels a keyword names: lemma, then synonym, then embedding.

The ``annotations`` provider maps a keyword ("red cups") to the item's labelled
regions ("cup", "red cup", "mug", ...). Steps, from the most to the least precise;
the first step that matches anything decides:

1. :func:`match_by_lemma` - the keyword's core phrase lemma equals the label's
   ("red cups" ~ "a red cup"); failing that, the keyword's head noun equals the label's
   head and the label's modifiers do not contradict the keyword's ("cup" ~ "red cup";
   "red cup" ~ "cup", but not ~ "blue cup").
2. :func:`match_by_synonym` - the heads are synonyms or one is a listed hypernym of the
   other in :mod:`mfpo.lexicon` ("automobile" ~ "car", "man" ~ "person").
3. :func:`match_by_embedding` - the cosine of the MiniLM vectors of the core phrases is
   at least ``threshold``; only the best-scoring label text is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mfpo.keywords.vectors import Embedder
from mfpo.lexicon import core_phrase, head_lemma, same_object_class


def _modifiers(core: str) -> set[str]:
    return set(core.split()[:-1])


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
        # Compatible: one side's modifiers contain the other's ("cup" vs "red cup").
        if label_mods <= mods or mods <= label_mods:
            out.append(i)
    return out


def match_by_synonym(keyword: str, labels: Sequence[str]) -> list[int]:
    """Indexes of labels whose head is a synonym, hypernym or hyponym of the keyword's head."""
    head = head_lemma(keyword)
    if not head:
        return []
    return [i for i, label in enumerate(labels) if head_lemma(label) and same_object_class(head, head_lemma(label))]


def match_by_embedding(keyword: str, labels: Sequence[str], embedder: Embedder, threshold: float) -> list[int]:
    """Indexes of the labels sharing the best cosine >= ``threshold`` to the keyword (MiniLM vectors)."""
    key = core_phrase(keyword) or keyword.strip().lower()
    cores = [core_phrase(label) or label.strip().lower() for label in labels]
    usable = [i for i, c in enumerate(cores) if c]
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
