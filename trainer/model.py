"""The policy: a LLaVA-class model from a local folder (or hub id), optionally with LoRA adapters.

``AutoModelForImageTextToText`` covers LLaVA-1.5 (``LlavaForConditionalGeneration``) and
LLaVA-NeXT; the model's own processor and chat template are used. With LoRA (peft) the
reference model is the same network with its adapters disabled, so no second copy is held.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from trainer.collate import split_rows
from trainer.config import TrainConfig
from trainer.logps import mean_token_entropy, sequence_logps


def load_policy(model_path: str, config: TrainConfig) -> tuple[Any, Any]:
    """(model, processor); vision tower frozen and LoRA added as the config says."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    local = Path(model_path).exists()
    try:
        processor = AutoProcessor.from_pretrained(model_path, local_files_only=local)
        model: Any = AutoModelForImageTextToText.from_pretrained(model_path, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load model {model_path!r}: {exc}") from exc
    if config.freeze_vision_tower:
        for name, param in model.named_parameters():
            if "vision_tower" in name:
                param.requires_grad_(False)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if config.lora:
        from peft import LoraConfig, get_peft_model

        targets = "|".join(config.lora_target_modules)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=rf".*language_model.*\.({targets})",  # adapters in the LLM, not the vision tower
        )
        model = get_peft_model(model, lora)
    return model, processor


@contextlib.contextmanager
def reference_mode(model: Any) -> Iterator[None]:
    """The reference policy: adapters disabled (LoRA), or the model as it is (before full fine-tuning).

    Looks through a distributed wrapper (``.module``) for the adapters.
    """
    inner = getattr(model, "module", model)
    disable = getattr(inner, "disable_adapter", None)
    with disable() if callable(disable) else contextlib.nullcontext():
        yield


def forward_logps(model: Any, batch: dict[str, torch.Tensor], parts: int = 3) -> dict[str, torch.Tensor]:
    """One forward over the ``parts`` * B sequences of :func:`~trainer.collate.collate`.

    Returns ``chosen``, ``rejected`` (and with 3 parts ``chosen_perturbed``) summed answer
    log-probs (B,), and ``entropy`` (B,): mean token entropy of the predictive distribution
    over the chosen answer given the original image (sec. 3.3).
    """
    out = model(**{k: v for k, v in batch.items() if k != "labels"})
    rows = split_rows(sequence_logps(out.logits, batch["labels"]), parts)
    b = rows[0].shape[0]
    entropy = mean_token_entropy(out.logits[:b].detach(), batch["labels"][:b])
    names = ("chosen", "rejected", "chosen_perturbed")[:parts]
    return {**dict(zip(names, rows, strict=True)), "entropy": entropy}
