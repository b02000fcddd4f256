"""Summed answer log-probs under a LLaVA model, computed by the trainer's own code.

The probe must measure exactly what training optimizes, so it reuses ``trainer/collate.py``
(``collate``: chat-template prompt + answer + EOS, prompt and image tokens masked) and
``trainer/model.py`` (``forward_logps``: one forward, float32 ``log_softmax`` sums per
sequence) instead of a second implementation. This is the one place where ``mfpo`` reaches
into the ``trainer`` package (shipped in the same distribution, no extra dependencies);
moving those two pieces into the library would remove it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image


def answer_logps(model: Any, processor: Any, device: torch.device, ids: Sequence[str], questions: Sequence[str],
                 chosen: Sequence[str], rejected: Sequence[str], images: Sequence[Image.Image],
                 other_images: Sequence[Image.Image] | None) -> dict[str, torch.Tensor]:
    """log p(chosen | image), log p(rejected | image) and, with ``other_images``, log p(chosen | other image):
    float32 tensors (B,) under keys ``chosen``, ``rejected``, ``chosen_perturbed``."""
    from trainer.collate import collate
    from trainer.data import Example
    from trainer.model import forward_logps

    others = other_images if other_images is not None else images
    examples = [Example(i, q, c, r, m, o)
                for i, q, c, r, m, o in zip(ids, questions, chosen, rejected, images, others, strict=True)]
    parts = 3 if other_images is not None else 2
    batch = {k: v.to(device) for k, v in collate(processor, examples, perturbed=parts == 3).items()}
    with torch.inference_mode():
        out = forward_logps(model, batch, parts=parts)
    return {k: v.float().cpu() for k, v in out.items() if k != "entropy"}
