"""Per-sequence quantities from a causal LM's logits: summed answer log-probs and mean token entropy.

Shapes: ``logits`` (N, T, V) float, ``labels`` (N, T) int64 with -100 on every position that
is not an answer token (prompt, image tokens, padding). As in every causal LM, the token at
position t is predicted by the logits at t - 1, so both functions shift by one.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (N, T)")
    logits = logits[:, :-1, :]
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    return logits, labels.masked_fill(~mask, 0), mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """sum_t log pi(y_t | y_<t, prompt, image) over answer tokens: float32 (N,).

    Computed in float32 (log_softmax of bf16 logits loses the small differences DPO-style
    losses live on).
    """
    logits, targets, mask = _shift(logits, labels)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(dim=-1)


def mean_token_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over answer tokens of H(P) = -sum_i p_i log p_i of the predictive distribution (MFPO sec. 3.3): (N,).

    Sequences without answer tokens get 0.
    """
    logits, _, mask = _shift(logits, labels)
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    counts = mask.sum(dim=-1)
    return (entropy * mask).sum(dim=-1) / counts.clamp(min=1)
