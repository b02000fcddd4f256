"""Word-level text processing for the object-hallucination scorers, with nothing to download.

The reference scorers call ``nltk.word_tokenize`` (needs the punkt model), pattern's
``singularize`` (CHAIR), NLTK's perceptron tagger and WordNet lemmatizer (AMBER). Offline
equivalents used here:

- tokens: sentences split after ``.``/``!``/``?`` + whitespace, then NLTK's Treebank word
  tokenizer (``NLTKWordTokenizer``, the tokenizer inside ``word_tokenize``, which needs no
  data); punkt's only effect on tokens is where a sentence-final period is split off;
- singular forms: pattern.en's ``singularize``, in the copy textblob vendors
  (``textblob.en.inflect``) — the very function CHAIR calls, slips included ("glass" ->
  "glas", "bus" -> "bu") — or lemminflect's noun lemma;
- part of speech: pattern's Penn Treebank tagger (textblob's ``PatternTagger``) instead of
  NLTK's perceptron;
- noun lemmas: lemminflect's noun lemmatizer instead of WordNet's ``morphy``.
"""

from __future__ import annotations

import re
from functools import lru_cache

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@lru_cache(maxsize=1)
def _word_tokenizer() -> object:
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    """``nltk.word_tokenize`` without punkt: Treebank tokens of each sentence."""
    tokenizer = _word_tokenizer()
    return [t for s in _SENTENCE_END.split(text) if s.strip() for t in tokenizer.tokenize(s)]  # type: ignore[attr-defined]


@lru_cache(maxsize=65536)
def singularize_pattern(word: str) -> str:
    """pattern.en.singularize (textblob's vendored copy), as CHAIR's reference code calls it."""
    from textblob.en.inflect import singularize

    return str(singularize(word))


@lru_cache(maxsize=65536)
def noun_lemma(word: str) -> str:
    """The noun lemma of ``word`` by lemminflect (its first reading), or the word itself. Case is kept."""
    from lemminflect import getLemma

    found = getLemma(word, upos="NOUN")
    return str(found[0]) if found else word


@lru_cache(maxsize=1)
def _tagger() -> object:
    from textblob.en.taggers import PatternTagger

    return PatternTagger()


def pos_tags(tokens: list[str]) -> list[str]:
    """Penn Treebank tags of pre-split tokens, one per token, by pattern's tagger as textblob ships it."""
    if not tokens:
        return []
    tagged = _tagger().tag(" ".join(t.replace(" ", "_") for t in tokens), tokenize=False)  # type: ignore[attr-defined]
    if len(tagged) != len(tokens):
        raise ValueError(f"the tagger split {len(tokens)} tokens into {len(tagged)}")
    return [str(tag) for _, tag in tagged]
