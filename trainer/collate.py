"""Batches for LLaVA: each item becomes three sequences, answers labelled, prompts masked.

For B items the batch holds 3B sequences in this order (one forward pass per step):
rows [0, B): (chosen | m), [B, 2B): (rejected | m), [2B, 3B): (chosen | m'), where m is the
original image and m' the rejected (perturbed) image. The text of a sequence is the model's
own chat template: ``apply_chat_template(user turn with the image and the question,
add_generation_prompt=True)`` followed by the answer. ``labels`` is -100 on the prompt
(image tokens included) and on padding, the token ids on the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from trainer.data import Example
from trainer.logps import IGNORE_INDEX


def prompt_text(processor: Any, question: str) -> str:
    """The templated user turn with one image, ending where the assistant's answer starts."""
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return str(processor.apply_chat_template(conversation, add_generation_prompt=True))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def collate(processor: Any, examples: Sequence[Example], perturbed: bool = True) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``pixel_values`` and ``labels`` of the 3B sequences
    (2B without ``perturbed``: text-only losses such as DPO skip (chosen | m'))."""
    prompts = [prompt_text(processor, e.question) for e in examples]
    answers = [e.chosen for e in examples] + [e.rejected for e in examples]
    images = [e.image for e in examples] * 2
    if perturbed:
        answers += [e.chosen for e in examples]
        images += [e.rejected_image for e in examples]
    prompts3 = prompts * (3 if perturbed else 2)
    eos = processor.tokenizer.eos_token or ""
    texts = [f"{p} {a}{eos}" for p, a in zip(prompts3, answers, strict=True)]  # the answer ends: EOS is learned
    batch = processor(images=images, text=texts, return_tensors="pt", padding=True)
    prompt_ids = processor(images=images, text=prompts3, return_tensors="pt", padding=True)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = IGNORE_INDEX
    for row in range(len(texts)):
        full = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        prompt = prompt_ids["input_ids"][row][prompt_ids["attention_mask"][row].bool()].tolist()
        cut = _common_prefix(full, prompt)
        if cut == len(full):
            raise ValueError(f"item {examples[row % len(examples)].id}: the answer adds no tokens")
        start = int(batch["attention_mask"][row].nonzero()[0])  # left padding would shift the prompt
        labels[row, : start + cut] = IGNORE_INDEX
    out = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    if "image_sizes" in batch:  # LLaVA-NeXT: any-resolution tiles need each image's size
        out["image_sizes"] = batch["image_sizes"]
    return {**out, "labels": labels}


def split_rows(values: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """(parts * B,) per-sequence values -> [chosen | m, rejected | m(, chosen | m')], each (B,)."""
    if values.shape[0] % parts:
        raise ValueError(f"expected {parts}B rows, got {values.shape[0]}")
    return list(values.chunk(parts))
