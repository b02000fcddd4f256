"""Keyword selection of MFPO section 3.1: which objects the chosen answer talks about.

``extract_keywords(text)`` runs the steps in order:

1. :func:`~mfpo.keywords.candidates.select_candidates` - noun-phrase candidates k_i with
   their token positions L(k_i);
2. :func:`~mfpo.keywords.objectness.kind_probabilities` - does each head name a thing, stuff
   or nothing physical; candidates below ``min_objectness`` are dropped (ours);
3. :class:`~mfpo.keywords.vectors.PhraseEmbedder` - phrase vectors v(k_i) (MiniLM, offline);
4. :func:`~mfpo.keywords.graph.build_graph` - the multipartite graph, omega_ij = tau_ij * kappa_ij;
5. :func:`~mfpo.keywords.rank.pagerank` - scores r(k_i), restarted from the objectness prior
   q_i when ``objectness_prior`` (ours; the paper restarts every node with 1 - alpha_page);
6. :func:`~mfpo.keywords.rank.select_top_k` - the top-K keywords.
"""

from __future__ import annotations

from mfpo.keywords.candidates import Candidate, select_candidates, tokenize
from mfpo.keywords.config import KeywordConfig
from mfpo.keywords.graph import build_graph
from mfpo.keywords.objectness import kind_probabilities
from mfpo.keywords.rank import RankingDidNotConverge, pagerank, select_top_k, weighted_pagerank
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
    "kind_probabilities",
    "pagerank",
    "rank_candidates",
    "select_candidates",
    "select_top_k",
    "weighted_pagerank",
]


def rank_candidates(
    text: str, config: KeywordConfig | None = None, embedder: Embedder | None = None
) -> tuple[list[Candidate], list[float], list[int]]:
    """Every kept candidate of ``text`` with its PageRank score and topic id (same order).

    Returns ``(candidates, scores, topic_ids)``; all empty when the text has no
    candidate noun phrase that names a physical region.
    """
    config = config or KeywordConfig()
    candidates = select_candidates(text, config)
    if not candidates:
        return [], [], []
    embedder = embedder or get_embedder()
    kinds = kind_probabilities([c.head for c in candidates], embedder)
    physical = kinds[:, 0] + kinds[:, 1]
    keep = [i for i in range(len(candidates)) if physical[i] >= config.min_objectness]
    if not keep:
        return [], [], []
    candidates, kinds = [candidates[i] for i in keep], kinds[keep]
    vectors = embedder.embed([c.lemma for c in candidates])
    omega, topic_of = build_graph(candidates, vectors, len(tokenize(text)), config)
    prior = kinds[:, 0] + config.stuff_weight * kinds[:, 1] if config.objectness_prior else None
    result = pagerank(omega, config.alpha_page, config.tol, config.max_iter, prior=prior)
    return candidates, [float(s) for s in result.scores], [int(t) for t in topic_of]


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
