"""Preference losses against hand-computed numbers, and the direction of their gradients."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import LOSSES, adavip_loss, compute_loss, dpo_loss, get_loss, mdpo_loss, mfpo_loss


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# beta = 0.5; chosen reward 0.5 * (-10 + 11) = 0.5, rejected 0.5 * (-12 + 11) = -0.5, perturbed 0.5 * (-13 + 11) = -1
POLICY = {"chosen": -10.0, "rejected": -12.0, "perturbed": -13.0}
REF = {"chosen": -11.0, "rejected": -11.0, "perturbed": -11.0}


def _args():
    return (t(POLICY["chosen"]), t(POLICY["rejected"]), t(POLICY["perturbed"]),
            t(REF["chosen"]), t(REF["rejected"]), t(REF["perturbed"]))


def test_dpo_by_hand():
    pc, pr, _, rc, rr, _ = _args()
    loss, m = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert loss.item() == pytest.approx(softplus(-1.0))  # -log sigma(0.5 - (-0.5)) = log(1 + e^-1) = 0.31326
    assert m["rewards/chosen"] == pytest.approx(0.5) and m["rewards/rejected"] == pytest.approx(-0.5)
    assert m["rewards/text_accuracy"] == 1.0


def test_mfpo_by_hand():
    loss, m = mfpo_loss(*_args(), beta=0.5, eta=0.2, weights=(1.0, 2.0, 3.0))
    text = softplus(-1.0)  # eq. 5: -log sigma(0.5 + 0.5)
    image = softplus(-1.5)  # eq. 6: -log sigma(0.5 - (-1))
    margin = softplus(-0.3)  # eq. 7: -log sigma(0.5 - 0.2)
    assert (text, image, margin) == pytest.approx((0.3132617, 0.2014133, 0.5543552), abs=1e-7)
    assert loss.item() == pytest.approx(text + 2 * image + 3 * margin)  # 2.3791539
    assert m["loss/image"] == pytest.approx(image) and m["rewards/perturbed"] == pytest.approx(-1.0)
    assert m["rewards/image_margin"] == pytest.approx(1.5) and m["rewards/image_accuracy"] == 1.0


def test_mdpo_is_mfpo_with_unit_weights_and_anchor_delta():
    loss, m = mdpo_loss(*_args(), beta=0.5, delta=0.2)
    assert loss.item() == pytest.approx(softplus(-1.0) + softplus(-1.5) + softplus(-0.3))
    assert "loss/conditional" in m and "loss/anchor" in m and "loss/image" not in m


def test_adavip_plackett_luce_by_hand():
    loss, m = adavip_loss(*_args(), beta=0.5)
    # -log [e^r++ / (e^r++ + e^r+- + e^r-+)] with r = (0.5, -0.5, -1)
    expected = -math.log(math.exp(0.5) / (math.exp(0.5) + math.exp(-0.5) + math.exp(-1.0)))
    assert loss.item() == pytest.approx(expected) and expected == pytest.approx(0.4643688, abs=1e-7)
    w = math.exp(-0.5) / (math.exp(-0.5) + math.exp(-1.0))
    assert m["weights/language_rejected"] == pytest.approx(w)  # the harder rejected sample weighs more


def test_adavip_is_stable_for_huge_reward_gaps():
    big = adavip_loss(t(0.0), t(0.0), t(0.0), t(5e4), t(-5e4), t(-5e4), beta=1.0)[0]
    # gaps r_j - r_++ are both 1e5: softplus(logsumexp) = 1e5 + log 2, where exp() alone would overflow
    assert math.isfinite(big.item()) and big.item() == pytest.approx(1e5 + math.log(2), rel=1e-12)
    small = adavip_loss(t(5e4), t(-5e4), t(-5e4), t(0.0), t(0.0), t(0.0), beta=1.0)[0]
    assert small.item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_point_the_right_way(name):
    args = _args()
    names = ["policy_chosen_logps", "policy_rejected_logps", "policy_chosen_perturbed_logps",
             "ref_chosen_logps", "ref_rejected_logps", "ref_chosen_perturbed_logps"]
    loss, _ = compute_loss(name, dict(zip(names, args, strict=True)), beta=0.5)
    loss.backward()
    chosen, rejected, perturbed = args[0].grad, args[1].grad, args[2].grad
    assert float(chosen) < 0  # raising log pi(y_w | m) lowers every loss
    assert float(rejected) > 0  # raising log pi(y_l | m) raises it
    if name == "dpo":
        assert perturbed is None
    else:
        assert float(perturbed) > 0  # raising log pi(y_w | m') raises it: the image term


def test_batch_mean_shapes_and_names():
    loss, _ = dpo_loss(t(-1.0, -2.0), t(-3.0, -1.0), t(-2.0, -2.0), t(-2.0, -2.0), beta=1.0)
    assert loss.item() == pytest.approx((softplus(-2.0) + softplus(1.0)) / 2)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        dpo_loss(t(-1.0, -2.0), t(-3.0), t(-2.0, -2.0), t(-2.0, -2.0))
    with pytest.raises(ValueError, match="valid losses: mfpo, dpo, mdpo, adavip"):
        get_loss("ipo")
