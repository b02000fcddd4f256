"""The multipartite keyword graph of MFPO section 3.1, one function per step.

Nodes are the n candidates k_i (noun phrases, :mod:`mfpo.keywords.candidates`).
Every matrix here is dense float64 of shape (n, n). Entry [i, j] is the weight with
which k_i receives score from k_j in the PageRank update of :mod:`mfpo.keywords.rank`
(r(k_i) gets omega_ij * r(k_j) / sum_m omega_mj, k_j's out-weight).

Steps:

* :func:`topics` - cluster candidates into topics (Boudin 2018); the graph is
  multipartite: edges join only candidates of different topics.
* :func:`positional_influence` - theta_ij = sum_{l_i} sum_{l_j} 1 / (1 + |l_i - l_j|^phi).
* :func:`semantic_similarity` - sigma_ij = gamma * S(k_i, k_j), S the cosine of v(k_i), v(k_j).
* :func:`combined_weight` - mu_ij = theta_ij + sigma_ij, zero within a topic.
* :func:`contextual_adjustment` - tau_ij, the paper's "adjusting edge weights contextually
  using related words", read as Boudin's (2018) topic boost (see there).
* :func:`positional_decay` - kappa_ij = exp(-lambda * l_i).
* :func:`edge_weights` - omega_ij = tau_ij * kappa_ij.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from mfpo.keywords.candidates import Candidate
from mfpo.keywords.config import KeywordConfig

Matrix = npt.NDArray[np.float64]


def cosine_matrix(vectors: npt.NDArray[np.floating]) -> Matrix:
    """S(k_i, k_j) = v_i . v_j / (|v_i| |v_j|) for rows of ``vectors`` (n, d); (n, n) float64.

    Zero vectors get similarity 0 to everything.
    """
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    unit = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def topics(heads: Sequence[str], similarity: Matrix, threshold: float) -> npt.NDArray[np.int64]:
    """Topic id of each candidate, shape (n,) int64, ids numbered by first member.

    Average-linkage agglomerative clustering as in Boudin (2018) (he clusters on stem
    overlap; we cluster on phrase-vector cosine): start from singletons, repeatedly merge
    the two clusters with the highest mean pairwise similarity while it is >= ``threshold``.
    Candidates with the same head-noun lemma ("red cup", "cup") count as similarity 1.
    Ties merge the pair with the smallest indexes first, so the result is deterministic.
    """
    n = len(heads)
    if similarity.shape != (n, n):
        raise ValueError(f"similarity must be ({n}, {n}), got {similarity.shape}")
    sim = np.array(similarity, dtype=np.float64)
    same_head = np.array([[a == b for b in heads] for a in heads], dtype=bool).reshape(n, n)
    sim[same_head] = 1.0
    clusters: list[list[int]] = [[i] for i in range(n)]
    while len(clusters) > 1:
        best, pair = -np.inf, (0, 0)
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                s = float(sim[np.ix_(clusters[a], clusters[b])].mean())
                if s > best:
                    best, pair = s, (a, b)
        if best < threshold:
            break
        a, b = pair
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    labels = np.empty(n, dtype=np.int64)
    for topic_id, members in enumerate(sorted(clusters, key=min)):
        labels[members] = topic_id
    return labels


def positional_influence(positions: Sequence[Sequence[int]], phi: float) -> Matrix:
    """theta_ij = sum_{l_i in L(k_i)} sum_{l_j in L(k_j)} 1 / (1 + |l_i - l_j|^phi); zero diagonal.

    positions[i] lists the token positions L(k_i). Computed as A^T K A with K (P, P) the
    kernel over all P occurrences and A (P, n) the occurrence-to-candidate indicator.
    """
    if phi <= 0:
        raise ValueError(f"phi must be > 0, got {phi}")
    n = len(positions)
    if any(len(p) == 0 for p in positions):
        raise ValueError("every candidate needs at least one position")
    flat = np.array([pos for p in positions for pos in p], dtype=np.float64)
    owner = np.array([i for i, p in enumerate(positions) for _ in p], dtype=np.int64)
    kernel = 1.0 / (1.0 + np.abs(flat[:, None] - flat[None, :]) ** phi)
    indicator = np.zeros((len(flat), n), dtype=np.float64)
    indicator[np.arange(len(flat)), owner] = 1.0
    theta = indicator.T @ kernel @ indicator
    np.fill_diagonal(theta, 0.0)
    return theta


def semantic_similarity(similarity: Matrix, gamma: float) -> Matrix:
    """sigma_ij = gamma * max(S(k_i, k_j), 0); zero diagonal.

    Negative cosines are clipped to 0: an edge weight must be non-negative for the
    PageRank normalization, and dissimilarity is not association.
    """
    sigma = gamma * np.clip(np.asarray(similarity, dtype=np.float64), 0.0, None)
    np.fill_diagonal(sigma, 0.0)
    return sigma


def combined_weight(theta: Matrix, sigma: Matrix, topic_of: npt.NDArray[np.int64]) -> Matrix:
    """mu_ij = theta_ij + sigma_ij between different topics, 0 within a topic (multipartite)."""
    if theta.shape != sigma.shape:
        raise ValueError(f"theta {theta.shape} and sigma {sigma.shape} differ in shape")
    mu = theta + sigma
    mu[topic_of[:, None] == topic_of[None, :]] = 0.0
    return mu


def contextual_adjustment(
    mu: Matrix, topic_of: npt.NDArray[np.int64], first_positions: Sequence[int], rho: float
) -> Matrix:
    """tau: Boudin's (2018) topic boost of the first-occurring candidate of each topic.

    The paper "refine[s] these relationships by adjusting edge weights contextually
    using related words" without a formula; its graph is Boudin's, whose adjustment is
    this one. For i the earliest candidate of its topic T(i) (ties: lowest index):

        tau_ij = mu_ij + rho * sum_{k in T(i), k != i} mu_kj

    and tau_ij = mu_ij for every other i. The first mention of an object thus also
    receives what its later variants ("red cup" then "cup") are linked to. Boudin also
    multiplies the boost by exp(1 / (1 + p_i)); here position is handled separately by
    the paper's kappa. Within-topic entries stay 0.
    """
    tau = np.array(mu, dtype=np.float64)
    first = np.asarray(first_positions)
    for t in np.unique(topic_of):
        members = np.flatnonzero(topic_of == t)
        if len(members) < 2:
            continue
        leader = int(members[np.lexsort((members, first[members]))[0]])
        mates = members[members != leader]
        tau[leader] += rho * mu[mates].sum(axis=0)
    return tau


def positional_decay(
    first_positions: Sequence[int], n_tokens: int, decay_lambda: float, normalize: bool
) -> Matrix:
    """kappa_ij = exp(-lambda * l_i), l_i the first position of k_i (the receiver); constant along j.

    With ``normalize`` l_i is divided by ``n_tokens`` (the answer's token count), so l_i
    lies in [0, 1) and the decay has the same range for short and long answers; without,
    l_i is the raw token position, as the paper writes it. Either way the exponent is taken
    relative to the earliest candidate (kappa = exp(-lambda (l_i - min_m l_m))): the ranking
    divides every weight by its sender's out-weight, so a factor common to all kappa
    cancels, and this keeps kappa from underflowing to 0 for every node of a long answer.
    """
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be > 0, got {n_tokens}")
    pos = np.asarray(first_positions, dtype=np.float64)
    if normalize:
        pos = pos / n_tokens
    if len(pos):
        pos = pos - pos.min()
    column = np.exp(-decay_lambda * pos)
    return np.repeat(column[:, None], len(pos), axis=1)


def edge_weights(tau: Matrix, kappa: Matrix) -> Matrix:
    """omega_ij = tau_ij * kappa_ij (element-wise), with the diagonal forced to 0."""
    omega = tau * kappa
    np.fill_diagonal(omega, 0.0)
    return omega


def build_graph(
    candidates: Sequence[Candidate],
    vectors: npt.NDArray[np.floating],
    n_tokens: int,
    config: KeywordConfig,
) -> tuple[Matrix, npt.NDArray[np.int64]]:
    """All steps in order: (omega (n, n) float64, topic id per candidate (n,) int64).

    vectors: (n, d) phrase vectors v(k_i) of the candidates, in the same order.
    """
    if len(vectors) != len(candidates):
        raise ValueError(f"{len(candidates)} candidates but {len(vectors)} vectors")
    similarity = cosine_matrix(vectors)
    topic_of = topics([c.head for c in candidates], similarity, config.topic_threshold)
    theta = positional_influence([c.positions for c in candidates], config.phi)
    sigma = semantic_similarity(similarity, config.gamma)
    mu = combined_weight(theta, sigma, topic_of)
    first = [c.first_position for c in candidates]
    tau = contextual_adjustment(mu, topic_of, first, config.rho)
    kappa = positional_decay(first, n_tokens, config.decay_lambda, config.normalize_positions)
    return edge_weights(tau, kappa), topic_of
