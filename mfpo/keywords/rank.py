"""Weighted PageRank over the keyword graph and top-K selection (MFPO section 3.1).

Steps, one function each:

* :func:`transition_matrix` - column-normalize omega: P_ij = omega_ij / sum_m omega_jm.
* :func:`weighted_pagerank` - iterate r(k_i) = (1 - alpha_page) + alpha_page * sum_j P_ij r(k_j)
  from r_0(k_i) = 1 - alpha_page until max |r_new - r| < tol.
* :func:`select_top_k` - the K best candidates, at most one per topic when asked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float64]


class RankingDidNotConverge(ValueError):
    """The PageRank iteration did not reach ``tol`` within ``max_iter`` steps."""


def transition_matrix(omega: Matrix) -> Matrix:
    """P (n, n) float64 with P_ij = omega_ij / sum_{k_m in N(k_j)} omega_jm (MFPO sec. 3.1, r_c).

    The paper's contribution r_c(k_i, k_j) = omega_ij r(k_j) / sum_m omega_jm divides by
    the out-weight of the *sending* node k_j, i.e. by row j of omega. A node with no
    edges (row sum 0) sends nothing; its column of P is 0.
    """
    omega = np.asarray(omega, dtype=np.float64)
    if omega.ndim != 2 or omega.shape[0] != omega.shape[1]:
        raise ValueError(f"omega must be square (n, n), got {omega.shape}")
    if (omega < 0).any():
        raise ValueError("edge weights omega must be non-negative")
    out_weight = omega.sum(axis=1)  # sum_m omega_jm, indexed by j
    return np.divide(omega, out_weight[None, :], out=np.zeros_like(omega), where=out_weight[None, :] > 0)


def weighted_pagerank(omega: Matrix, alpha_page: float = 0.85, tol: float = 1e-6, max_iter: int = 200) -> Vector:
    """Scores r(k_i), shape (n,) float64, of the MFPO weighted PageRank (sec. 3.1).

    r_0(k_i) = 1 - alpha_page;
    r(k_i) <- (1 - alpha_page) + alpha_page * sum_j omega_ij r(k_j) / sum_m omega_jm,
    a Jacobi iteration (all scores updated from the previous vector), stopped when
    max_i |r_new(k_i) - r(k_i)| < tol. Raises :class:`RankingDidNotConverge` after
    ``max_iter`` iterations (with 0 < alpha_page < 1 the map is a contraction, so this
    only happens when ``max_iter`` is set too low for ``tol``).
    """
    if not 0.0 < alpha_page < 1.0:
        raise ValueError(f"alpha_page must be in (0, 1), got {alpha_page}")
    transition = transition_matrix(omega)
    n = transition.shape[0]
    r = np.full(n, 1.0 - alpha_page, dtype=np.float64)
    if n == 0:
        return r
    for _ in range(max_iter):
        r_new = (1.0 - alpha_page) + alpha_page * (transition @ r)
        if float(np.max(np.abs(r_new - r))) < tol:
            return r_new
        r = r_new
    raise RankingDidNotConverge(f"weighted PageRank did not converge to tol={tol} in max_iter={max_iter} iterations")


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
