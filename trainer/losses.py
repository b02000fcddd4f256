"""Preference losses as pure functions of per-sequence summed log-probabilities.

Every input is a float tensor of shape (B,): the sum over answer tokens of
log pi(y | prompt, image) for one sequence per item, from the policy (``policy_*``)
or the frozen reference (``ref_*``). With r(y | m) = beta * (log pi_theta(y|t,m) -
log pi_ref(y|t,m)) the implicit reward (DPO eq. 3/4):

* chosen    = r(y_w | m),  rejected = r(y_l | m),  perturbed = r(y_w | m')
  (m the original image, m' the rejected image of MFPO section 3.1).

Each loss returns ``(loss, metrics)``: the batch-mean scalar and detached floats.

* :func:`dpo_loss` - DPO (MFPO eq. 4/5), text only.
* :func:`mfpo_loss` - MFPO eq. 5 + 6 + 7: w_t L_text + w_i L_image + w_m L_margin.
* :func:`mdpo_loss` - mDPO (Wang et al. 2024): DPO + conditional (image) preference +
  anchor r(y_w | m) > delta; MFPO's terms with mDPO's names and unit weights.
* :func:`adavip_loss` - AdaViP eq. 10-11: Plackett-Luce over {(m, y_w) > (m, y_l), (m', y_w)},
  -log sigma(-log sum_j exp(r_j - r_++)) = softplus(logsumexp_j (r_j - r_++)), computed with
  logsumexp for stability.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Metrics = dict[str, float]


def _rewards(policy: Tensor, ref: Tensor, beta: float) -> Tensor:
    return beta * (policy - ref)


def _mean(x: Tensor) -> float:
    return float(x.detach().float().mean())


def _check(*tensors: Tensor) -> None:
    shape = tensors[0].shape
    if len(shape) != 1 or any(t.shape != shape for t in tensors):
        raise ValueError(f"log-prob inputs must all have shape (B,), got {[tuple(t.shape) for t in tensors]}")


def _three_rewards(*logps: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """(chosen, rejected, perturbed) implicit rewards from the six log-prob tensors (policy 3, ref 3)."""
    _check(*logps)
    pc, pr, pp, rc, rr, rp = logps
    return _rewards(pc, rc, beta), _rewards(pr, rr, beta), _rewards(pp, rp, beta)


def _reward_metrics(chosen: Tensor, rejected: Tensor, perturbed: Tensor) -> Metrics:
    return {
        "rewards/chosen": _mean(chosen),
        "rewards/rejected": _mean(rejected),
        "rewards/perturbed": _mean(perturbed),
        "rewards/text_margin": _mean(chosen - rejected),
        "rewards/image_margin": _mean(chosen - perturbed),
        "rewards/text_accuracy": _mean((chosen > rejected).float()),
        "rewards/image_accuracy": _mean((chosen > perturbed).float()),
    }


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> tuple[Tensor, Metrics]:
    """DPO (MFPO eq. 5): mean of -log sigma(r(y_w|m) - r(y_l|m))."""
    _check(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen = _rewards(policy_chosen_logps, ref_chosen_logps, beta)
    rejected = _rewards(policy_rejected_logps, ref_rejected_logps, beta)
    losses = -F.logsigmoid(chosen - rejected)
    return losses.mean(), {
        "loss/text": _mean(losses),
        "rewards/chosen": _mean(chosen),
        "rewards/rejected": _mean(rejected),
        "rewards/text_margin": _mean(chosen - rejected),
        "rewards/text_accuracy": _mean((chosen > rejected).float()),
    }


def mfpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    policy_chosen_perturbed_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    ref_chosen_perturbed_logps: Tensor,
    *,
    beta: float = 0.1,
    eta: float = 0.0,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> tuple[Tensor, Metrics]:
    """MFPO: mean of w_t L_text + w_i L_image + w_m L_margin (eq. 5, 6, 7).

    L_text   = -log sigma(r(y_w|m) - r(y_l|m))            (eq. 5)
    L_image  = -log sigma(r(y_w|m) - r(y_w|m'))           (eq. 6, chosen answer, original vs perturbed image)
    L_margin = -log sigma(r(y_w|m) - eta)                 (eq. 7)
    """
    w_t, w_i, w_m = weights
    chosen, rejected, perturbed = _three_rewards(
        policy_chosen_logps, policy_rejected_logps, policy_chosen_perturbed_logps,
        ref_chosen_logps, ref_rejected_logps, ref_chosen_perturbed_logps, beta=beta,
    )
    text = -F.logsigmoid(chosen - rejected)
    image = -F.logsigmoid(chosen - perturbed)
    margin = -F.logsigmoid(chosen - eta)
    losses = w_t * text + w_i * image + w_m * margin
    return losses.mean(), {
        "loss/text": _mean(text),
        "loss/image": _mean(image),
        "loss/margin": _mean(margin),
        **_reward_metrics(chosen, rejected, perturbed),
    }


def mdpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    policy_chosen_perturbed_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    ref_chosen_perturbed_logps: Tensor,
    *,
    beta: float = 0.1,
    delta: float = 0.0,
) -> tuple[Tensor, Metrics]:
    """mDPO: L_DPO + L_CoPO (conditional preference: y_w under m over m') + L_AncPO (anchor r(y_w|m) > delta)."""
    loss, metrics = mfpo_loss(
        policy_chosen_logps, policy_rejected_logps, policy_chosen_perturbed_logps,
        ref_chosen_logps, ref_rejected_logps, ref_chosen_perturbed_logps,
        beta=beta, eta=delta, weights=(1.0, 1.0, 1.0),
    )
    renamed = {k.replace("loss/image", "loss/conditional").replace("loss/margin", "loss/anchor"): v
               for k, v in metrics.items()}
    return loss, renamed


def adavip_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    policy_chosen_perturbed_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    ref_chosen_perturbed_logps: Tensor,
    *,
    beta: float = 0.1,
) -> tuple[Tensor, Metrics]:
    """AdaViP (eq. 11): mean of -log sigma(-log sum_{j in {+-, -+}} exp(r_j - r_++)).

    r_++ = r(y_w|m), r_+- = r(y_l|m) (language-rejected), r_-+ = r(y_w|m') (vision-rejected).
    Computed as softplus(logsumexp(r_j - r_++)), which equals the formula and never overflows.
    The gradient weights the two rejected samples by softmax(r_j) (eq. 12-13).
    """
    chosen, rejected, perturbed = _three_rewards(
        policy_chosen_logps, policy_rejected_logps, policy_chosen_perturbed_logps,
        ref_chosen_logps, ref_rejected_logps, ref_chosen_perturbed_logps, beta=beta,
    )
    gaps = torch.stack([rejected - chosen, perturbed - chosen], dim=-1)  # (B, 2)
    losses = F.softplus(torch.logsumexp(gaps, dim=-1))
    weights = torch.softmax(torch.stack([rejected, perturbed], dim=-1), dim=-1)
    return losses.mean(), {
        "loss/plackett_luce": _mean(losses),
        **_reward_metrics(chosen, rejected, perturbed),
        "weights/language_rejected": _mean(weights[:, 0]),
        "weights/vision_rejected": _mean(weights[:, 1]),
    }


LOSSES: dict[str, Callable[..., tuple[Tensor, Metrics]]] = {
    "mfpo": mfpo_loss,
    "dpo": dpo_loss,
    "mdpo": mdpo_loss,
    "adavip": adavip_loss,
}
NEEDS_PERTURBED = frozenset({"mfpo", "mdpo", "adavip"})


def get_loss(name: str) -> Callable[..., tuple[Tensor, Metrics]]:
    """The loss function called ``name``; an unknown name raises a ValueError listing the valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}") from None


def compute_loss(name: str, logps: dict[str, Tensor], **options: Any) -> tuple[Tensor, Metrics]:
    """Call loss ``name`` with the log-prob tensors it takes from ``logps`` (keys as the argument names)."""
    fn = get_loss(name)
    keys = ["policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps"]
    if name in NEEDS_PERTURBED:
        keys = ["policy_chosen_logps", "policy_rejected_logps", "policy_chosen_perturbed_logps",
                "ref_chosen_logps", "ref_rejected_logps", "ref_chosen_perturbed_logps"]
    return fn(*(logps[k] for k in keys), **options)
