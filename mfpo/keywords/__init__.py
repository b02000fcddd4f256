"""Keyword selection of MFPO section 3.1: which objects the chosen answer talks about.

``extract_keywords(text)`` runs the steps in order:

1. :func:`~mfpo.keywords.candidates.select_candidates` - noun-phrase candidates k_i with
   their token positions L(k_i);
2. :class:`~mfpo.keywords.vectors.PhraseEmbedder` - phrase vectors v(k_i) (MiniLM, offline);
3. :func:`~mfpo.keywords.graph.build_graph` - the multipartite graph, omega_ij = tau_ij * kappa_ij;
4. :func:`~mfpo.keywords.rank.weighted_pagerank` - scores r(k_i);
5. :func:`~mfpo.keywords.rank.select_top_k` - the top-K keywords.
"""

from __future__ import annotations

from mfpo.keywords.candidates import Candidate, select_candidates, tokenize
from mfpo.keywords.config import KeywordConfig
from mfpo.keywords.graph import build_graph
from mfpo.keywords.rank import RankingDidNotConverge, select_top_k, weighted_pagerank
from mfpo.keywords.vectors import Embedder, PhraseEmbedder, get_embedder
from mfpo.schemas import KeywordScore

__all__ = [
    "Candidate",
    "Embedder",
    "KeywordConfig",
    "PhraseEmbedder",
    "RankingDidNotConverge",
    "build_graph",
    "extract_keywords",
    "get_embedder",
    "rank_candidates",
    "select_candidates",
    "select_top_k",
    "weighted_pagerank",
]


def rank_candidates(
    text: str, config: KeywordConfig | None = None, embedder: Embedder | None = None
) -> tuple[list[Candidate], list[float], list[int]]:
    """Every candidate of ``text`` with its PageRank score and topic id (same order).

    Returns ``(candidates, scores, topic_ids)``; all empty when the text has no
    candidate noun phrase.
    """
    config = config or KeywordConfig()
    candidates = select_candidates(text, config)
    if not candidates:
        return [], [], []
    embedder = embedder or get_embedder()
    vectors = embedder.embed([c.lemma for c in candidates])
    omega, topic_of = build_graph(candidates, vectors, len(tokenize(text)), config)
    scores = weighted_pagerank(omega, config.alpha_page, config.tol, config.max_iter)
    return candidates, [float(s) for s in scores], [int(t) for t in topic_of]


def extract_keywords(
    text: str, config: KeywordConfig | None = None, embedder: Embedder | None = None
) -> list[KeywordScore]:
    """Top-K keywords of ``text`` with their scores r(k_i), best first (MFPO sec. 3.1).

    An answer with no candidate noun phrase gives ``[]`` (the region stage then falls
    back to the whole image). Never fails on the ranking: the PageRank provably converges
    (:func:`~mfpo.keywords.rank.pagerank`), and a ranking stopped short by rounding is used
    as it stands, with a warning.
    """
    config = config or KeywordConfig()
    candidates, scores, topic_of = rank_candidates(text, config, embedder)
    if not candidates:
        return []
    picked = select_top_k(scores, config.top_k, topic_of if config.one_per_topic else None)
    return [KeywordScore(text=candidates[i].text, score=scores[i]) for i in picked]
