"""Pure parts of the trainer: answer log-probs, token entropy, the entropy curriculum."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.curriculum import entropy_stages, stage_plan
from trainer.logps import IGNORE_INDEX, mean_token_entropy, sequence_logps


def test_sequence_logps_shift_and_mask_by_hand():
    # vocab 2; logits at t predict token t+1. Position 0 is prompt (-100), answer tokens at 1 and 2.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]]])  # p = (1/2,1/2), (3/4,1/4), ...
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])
    # token 1 at t=1 from logits[0]: log 1/2; token 0 at t=2 from logits[1]: log 3/4
    assert sequence_logps(logits, labels).item() == pytest.approx(math.log(0.5) + math.log(0.75))
    assert sequence_logps(logits, torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 0]])).item() == pytest.approx(
        math.log(0.75))
    with pytest.raises(ValueError, match="disagree"):
        sequence_logps(logits, labels[:, :2])


def test_mean_token_entropy_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])
    h_uniform, h_34 = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert mean_token_entropy(logits, labels).item() == pytest.approx((h_uniform + h_34) / 2)
    none = torch.full((1, 3), IGNORE_INDEX)
    assert mean_token_entropy(logits, none).item() == 0.0


def test_entropy_tertiles_and_plan():
    ids = [f"i{k}" for k in range(7)]
    entropies = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.6]
    stages = entropy_stages(ids, entropies)
    assert stages == {"easy": ["i1", "i5", "i3"], "medium": ["i2", "i6"], "hard": ["i4", "i0"]}
    plan = stage_plan(ids, entropies, "easy-to-hard", epochs_per_stage=2)
    assert [s for s, _ in plan] == ["easy", "easy", "medium", "medium", "hard", "hard"]
    assert stage_plan(ids, entropies, "none", 1) == [("all", ids)]
    with pytest.raises(ValueError, match="valid: easy-to-hard, none"):
        stage_plan(ids, entropies, "hard-first", 1)  # type: ignore[arg-type]


def _steps(n_items, batch_size, accumulation, curriculum="easy-to-hard", epochs=1):
    from trainer.config import TrainConfig
    from trainer.loop import plan_micro_batches, plan_steps

    config = TrainConfig(batch_size=batch_size, gradient_accumulation_steps=accumulation, curriculum=curriculum,
                         epochs_per_stage=epochs)
    ids = [f"i{k:02d}" for k in range(n_items)]
    entropies = [k / n_items for k in range(n_items)]
    steps = plan_steps(config, ids, entropies)
    flat = [m for s in steps for m in s.micro_batches]
    assert flat == plan_micro_batches(config, ids, entropies)  # every micro-batch once, in order
    assert all(m.stage == s.stage for s in steps for m in s.micro_batches)  # a step never spans two stages
    return [(s.stage, len(s.micro_batches)) for s in steps]


@pytest.mark.parametrize(
    ("n_items", "batch_size", "accumulation", "curriculum", "epochs", "expected"),
    [
        # the audit's case: 4 items per stage = 2 micro-batches, fewer than the accumulation of 4
        (12, 2, 4, "easy-to-hard", 1, [("easy", 2), ("medium", 2), ("hard", 2)]),
        # tertiles 5 / 4 / 4 -> micro-batches 3 / 2 / 2 per epoch; two epochs; tails of 1 still step
        (13, 2, 3, "easy-to-hard", 2, [("easy", 3), ("easy", 3), ("medium", 3), ("medium", 1), ("hard", 3),
                                       ("hard", 1)]),
        (7, 3, 2, "easy-to-hard", 1, [("easy", 1), ("medium", 1), ("hard", 1)]),
        (12, 2, 4, "none", 1, [("all", 4), ("all", 2)]),
        (12, 2, 1, "easy-to-hard", 1, [("easy", 1)] * 2 + [("medium", 1)] * 2 + [("hard", 1)] * 2),
    ],
)
def test_optimizer_steps_for_awkward_sizes(n_items, batch_size, accumulation, curriculum, epochs, expected):
    assert _steps(n_items, batch_size, accumulation, curriculum, epochs) == expected
