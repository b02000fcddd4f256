"""Weighted PageRank over the keyword graph and top-K selection (MFPO section 3.1).

Steps, one function each:

* :func:`transition_matrix` - P_ij = omega_ij / sum_m omega_mj: what k_i receives from k_j,
  divided by everything k_j sends (the sender's out-weight, the paper's r_c).
* :func:`pagerank` - iterate r(k_i) = (1 - alpha_page) q_i + alpha_page * sum_j P_ij r(k_j)
  until max |r_new - r| < tol; q_i = 1 is the paper's update, a prior q is our addition.
* :func:`weighted_pagerank` - the scores of :func:`pagerank` (raises only when ``strict``).
* :func:`select_top_k` - the K best candidates, at most one per topic when asked.

Convention: ``omega[i, j]`` is the weight of the edge along which k_i receives score from
k_j (:mod:`mfpo.keywords.graph` builds it that way: omega_ij = tau_ij * kappa_ij with the
positional decay kappa on the receiver k_i).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float64]

log = logging.getLogger(__name__)


class RankingDidNotConverge(ValueError):
    """The PageRank iteration did not reach ``tol`` within ``max_iter`` steps (``strict`` only)."""


@dataclass(frozen=True)
class PageRankResult:
    """scores: r(k_i), shape (n,) float64; iterations run; converged: max |r_new - r| < tol;
    residual: the last max |r_new - r|."""

    scores: Vector
    iterations: int
    converged: bool
    residual: float


def transition_matrix(omega: Matrix) -> Matrix:
    """P (n, n) float64, P_ij = omega_ij / sum_{k_m in N(k_j)} omega_mj (MFPO sec. 3.1, r_c).

    The paper's contribution of a neighbour, r_c(k_i, k_j) = omega_ij r(k_j) / sum_m omega_jm,
    divides by the out-weight of the *sender* k_j: the total weight k_j gives to its
    neighbours m. With ``omega[i, j]`` the weight k_i receives from k_j, k_j's out-weights
    are column j, so P_ij = omega_ij / sum_m omega_mj and every column of P sums to 1 (or is
    0 for a node without edges, which sends nothing). This is Mihalcea & Tarau's (2004)
    weighted TextRank; for a symmetric omega (the paper's mu_ij) it is literally the paper's
    formula, and it equals ``networkx.pagerank``'s transition.
    """
    omega = np.asarray(omega, dtype=np.float64)
    if omega.ndim != 2 or omega.shape[0] != omega.shape[1]:
        raise ValueError(f"omega must be square (n, n), got {omega.shape}")
    if not np.isfinite(omega).all():
        raise ValueError("edge weights omega must be finite")
    if (omega < 0).any():
        raise ValueError("edge weights omega must be non-negative")
    out_weight = omega.sum(axis=0)  # sum_m omega_mj, indexed by the sender j
    return np.divide(omega, out_weight[None, :], out=np.zeros_like(omega), where=out_weight[None, :] > 0)


def iterations_needed(n: int, alpha_page: float, tol: float) -> int:
    """Iterations after which :func:`pagerank` has certainly met ``tol`` (see its proof).

    The smallest t with alpha^(t+1) (1 - alpha) n < tol, at least 1.
    """
    if n <= 0:
        return 1
    bound = math.log((1.0 - alpha_page) * n / tol) / math.log(1.0 / alpha_page) - 1.0
    return max(1, math.ceil(bound))


def pagerank(
    omega: Matrix,
    alpha_page: float = 0.85,
    tol: float = 1e-6,
    max_iter: int = 200,
    prior: Sequence[float] | Vector | None = None,
) -> PageRankResult:
    """The weighted PageRank of MFPO sec. 3.1 as a Jacobi iteration; never raises on slowness.

    r_0(k_i) = (1 - alpha_page) q_i, then
    r(k_i) <- (1 - alpha_page) q_i + alpha_page * sum_j P_ij r(k_j)    (P: :func:`transition_matrix`)
    until max_i |r_new(k_i) - r(k_i)| < tol. The paper has q_i = 1; ``prior`` (shape (n,),
    values in [0, 1]) is our addition: a node's restart mass, e.g. how surely it names a
    physical object.

    Convergence on every input, from the normalisation: each column of P sums to 1 or 0 and
    P >= 0, so ||P x||_1 <= sum_j |x_j| sum_i P_ij <= ||x||_1, and the update
    F(r) = (1 - alpha) q + alpha P r satisfies ||F(r) - F(s)||_1 <= alpha ||r - s||_1: a
    contraction with factor alpha < 1, whatever omega's size, scale or asymmetry. Hence
    max|r_{t+1} - r_t| <= ||r_{t+1} - r_t||_1 <= alpha^t ||r_1 - r_0||_1 <= alpha^(t+1) (1 - alpha) n
    (as 0 <= r_0 <= 1 - alpha and ||P r_0||_1 <= ||r_0||_1), which is < tol after
    :func:`iterations_needed` steps; the loop runs up to max(max_iter, that bound). Only
    floating-point rounding could stop it short; then the last iterate comes back with
    ``converged=False`` and a warning is logged: ranking never fails an item.
    """
    return _iterate(omega, alpha_page, tol, max_iter, prior, proven_bound=True)


def _iterate(
    omega: Matrix,
    alpha_page: float,
    tol: float,
    max_iter: int,
    prior: Sequence[float] | Vector | None,
    proven_bound: bool,
) -> PageRankResult:
    """The iteration of :func:`pagerank`, run up to max(max_iter, bound) or exactly max_iter."""
    if not 0.0 < alpha_page < 1.0:
        raise ValueError(f"alpha_page must be in (0, 1), got {alpha_page}")
    transition = transition_matrix(omega)
    n = transition.shape[0]
    q = np.ones(n) if prior is None else np.asarray(prior, dtype=np.float64)
    if q.shape != (n,) or not np.isfinite(q).all() or (q < 0).any() or (q > 1).any():
        raise ValueError(f"prior must be {n} values in [0, 1]")
    restart = (1.0 - alpha_page) * q
    r = restart.copy()
    if n == 0:
        return PageRankResult(r, 0, True, 0.0)
    limit = max(max_iter, iterations_needed(n, alpha_page, tol)) if proven_bound else max_iter
    residual = math.inf
    for it in range(1, limit + 1):
        r_new = restart + alpha_page * (transition @ r)
        residual = float(np.max(np.abs(r_new - r)))
        r = r_new
        if residual < tol:
            return PageRankResult(r, it, True, residual)
    if proven_bound:
        log.warning("weighted PageRank stopped at residual %.3g > tol %.3g after %d iterations", residual, tol, limit)
    return PageRankResult(r, limit, False, residual)


def weighted_pagerank(
    omega: Matrix,
    alpha_page: float = 0.85,
    tol: float = 1e-6,
    max_iter: int = 200,
    *,
    prior: Sequence[float] | Vector | None = None,
    strict: bool = False,
) -> Vector:
    """Scores r(k_i), shape (n,) float64, of :func:`pagerank`.

    With ``strict`` a ranking that did not reach ``tol`` raises :class:`RankingDidNotConverge`
    (the iteration limit is then exactly ``max_iter``, for tests of the stopping rule);
    otherwise the last iterate is returned (see :func:`pagerank`).
    """
    if strict:
        result = _iterate(omega, alpha_page, tol, max_iter, prior, proven_bound=False)
        if not result.converged:
            raise RankingDidNotConverge(
                f"weighted PageRank did not converge to tol={tol} in max_iter={max_iter} iterations"
            )
        return result.scores
    return pagerank(omega, alpha_page, tol, max_iter, prior).scores


def select_top_k(
    scores: Sequence[float] | Vector,
    top_k: int,
    topic_of: Sequence[int] | npt.NDArray[np.int64] | None = None,
) -> list[int]:
    """Indexes of the ``top_k`` highest scores, best first (ties: lower index first).

    With ``topic_of`` only the best candidate of each topic is eligible, so the K
    keywords name K different objects.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    s = np.asarray(scores, dtype=np.float64)
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))
    picked: list[int] = []
    seen_topics: set[int] = set()
    for i in order:
        if topic_of is not None:
            t = int(topic_of[i])
            if t in seen_topics:
                continue
            seen_topics.add(t)
        picked.append(i)
        if len(picked) == top_k:
            break
    return picked
