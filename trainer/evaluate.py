"""Held-out evaluation during training: a seeded split of the dataset (``eval_fraction``) or a second
dataset (``--eval-dataset``), scored every ``eval_steps`` optimizer steps and after the last.

The metrics are means over the held-out items of the policy against the reference pass:
``eval/loss`` (the run's loss), the implicit rewards r(y_w|m), r(y_l|m), r(y_w|m') and
``eval/rewards/text_margin`` = r(y_w|m) - r(y_l|m), ``eval/rewards/image_margin`` =
r(y_w|m) - r(y_w|m') with their accuracies (the share of items whose margin is > 0). The
three sequences are scored for every loss, so a text-only DPO run reports its image margin
too: the number MFPO is about. Every process scores every held-out item (one forward each,
in the same order), so sharded models (ZeRO-3, FSDP) run the same collectives on all ranks.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from trainer.collate import collate
from trainer.config import TrainConfig
from trainer.data import Example
from trainer.losses import compute_loss
from trainer.model import forward_logps
from trainer.reference import ReferenceRow


def split_held_out(ids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training ids, held-out ids), both in the given order.

    ``round(len(ids) * fraction)`` ids (at least one when ``fraction`` > 0) drawn with ``seed``
    from the sorted ids, so the split does not depend on the dataset's line order and a resumed
    run holds out the same items. Raises ``ValueError`` when nothing would be left to train.
    """
    if fraction <= 0:
        return list(ids), []
    n_eval = max(1, round(len(ids) * fraction))
    if n_eval >= len(ids):
        raise ValueError(f"eval_fraction={fraction} holds out {n_eval} of {len(ids)} items: none left to train")
    order = sorted(ids)
    random.Random(f"held-out/{seed}").shuffle(order)
    held = set(order[:n_eval])
    return [i for i in ids if i not in held], [i for i in ids if i in held]


@torch.inference_mode()
def evaluate(model: Any, processor: Any, examples: Sequence[Example], ref: Mapping[str, ReferenceRow],
             config: TrainConfig, device: Any, autocast: Callable[[], Any] | None = None,
             progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """``eval/*`` metrics of ``model`` on ``examples`` (means over items), in batches of ``config.batch_size``.

    ``ref`` holds each example's reference row; ``autocast`` is the policy's (``accelerator.autocast``);
    ``progress`` is called with the number of items of each finished batch.
    """
    if not examples:
        raise ValueError("no held-out examples to evaluate")
    was_training = model.training
    model.eval()
    sums = {"loss": 0.0, "chosen": 0.0, "rejected": 0.0, "perturbed": 0.0, "text_margin": 0.0,
            "image_margin": 0.0, "text_accuracy": 0.0, "image_accuracy": 0.0}
    try:
        for start in range(0, len(examples), config.batch_size):
            chunk = examples[start : start + config.batch_size]
            batch = {k: v.to(device) for k, v in collate(processor, chunk, perturbed=True).items()}
            with autocast() if autocast is not None else contextlib.nullcontext():
                out = forward_logps(model, batch, parts=3)
            refs = {key: torch.tensor([getattr(ref[e.id], f"ref_{key}_logps") for e in chunk], device=device)
                    for key in ("chosen", "rejected", "chosen_perturbed")}
            logps = {"policy_chosen_logps": out["chosen"].float(), "policy_rejected_logps": out["rejected"].float(),
                     "policy_chosen_perturbed_logps": out["chosen_perturbed"].float(),
                     **{f"ref_{key}_logps": value for key, value in refs.items()}}
            loss, _ = compute_loss(config.loss, logps, **config.loss_options())
            chosen = config.beta * (logps["policy_chosen_logps"] - refs["chosen"])
            rejected = config.beta * (logps["policy_rejected_logps"] - refs["rejected"])
            perturbed = config.beta * (logps["policy_chosen_perturbed_logps"] - refs["chosen_perturbed"])
            for key, values in {"chosen": chosen, "rejected": rejected, "perturbed": perturbed,
                                "text_margin": chosen - rejected, "image_margin": chosen - perturbed,
                                "text_accuracy": (chosen > rejected).float(),
                                "image_accuracy": (chosen > perturbed).float()}.items():
                sums[key] += float(values.sum())
            sums["loss"] += float(loss) * len(chunk)  # every loss is a batch mean
            if progress is not None:
                progress(len(chunk))
    finally:
        model.train(was_training)
    n = len(examples)
    return {"eval/loss": sums.pop("loss") / n, **{f"eval/rewards/{k}": v / n for k, v in sums.items()},
            "eval/items": n}
