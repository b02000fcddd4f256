"""The policy: a LLaVA-class model from a local folder (or hub id), optionally with LoRA adapters.

``AutoModelForImageTextToText`` covers LLaVA-1.5 (``LlavaForConditionalGeneration``) and
LLaVA-NeXT; the model's own processor and chat template are used. With LoRA (peft) the
reference model is the same network with its adapters disabled, so no second copy is held.

:func:`resolve_model` decides where the weights come from before ``from_pretrained`` runs:
a missing folder fails at once with its path (offline, ``from_pretrained`` would otherwise
retry the Hub for minutes on a name like ``models/llava``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from trainer.collate import split_rows
from trainer.config import TrainConfig
from trainer.logps import mean_token_entropy, sequence_logps


class ModelNotFound(ValueError):
    """``--model`` names neither an existing folder nor a model the Hub cache or the Hub has; says which path."""


def _is_hub_id(name: str) -> bool:
    """``name`` has the shape of a Hub repo id (``name`` or ``org/name``), not of a path (``./x``, ``x/``, ``/x``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(f.upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def resolve_model(model_path: str, probe_timeout_s: float = 10.0) -> tuple[str, bool]:
    """(location, local_files_only) for ``from_pretrained``, or :class:`ModelNotFound` at once.

    An existing folder is used as it is. A string shaped like a path (absolute, ``./``, ``~``,
    a trailing ``/``, more than one ``/``) that does not exist fails with its absolute path. A
    Hub-id-shaped name (``llava``, ``org/llava``) that is no folder here is loaded from the Hub
    cache when it is there; otherwise it fails when the Hub is off (``HF_HUB_OFFLINE``) or does
    not answer one request within ``probe_timeout_s`` (no retries) or does not know the name,
    naming both the folder it looked for and the Hub id.
    """
    path = Path(model_path).expanduser()
    if path.is_dir():
        return str(path), True
    where = path.absolute()
    if path.exists():
        raise ModelNotFound(f"model {model_path!r}: {where} is a file, not a model folder")
    if not _is_hub_id(model_path):
        raise ModelNotFound(f"model folder not found: {where}")
    from huggingface_hub import model_info, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model_path, "config.json"), str):
        return model_path, True  # a cached Hub snapshot: no network needed
    missing = f"model {model_path!r}: no folder {where}"
    if _hub_offline():
        raise ModelNotFound(f"{missing}, and not in the Hugging Face cache (offline: HF_HUB_OFFLINE is set)")
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        model_info(model_path, timeout=probe_timeout_s)
    except RepositoryNotFoundError:
        raise ModelNotFound(f"{missing}, and no Hub model of that name (or no access: set HF_TOKEN)") from None
    except HfHubHTTPError:
        return model_path, False  # the Hub answered (rate limit, server error): let from_pretrained report it
    except Exception as exc:  # connection errors come from requests or httpx, depending on the hub version
        reason = f"{type(exc).__name__}: {exc}"
        raise ModelNotFound(f"{missing}, and the Hugging Face Hub cannot be reached ({reason})") from None
    return model_path, False


def load_policy(model_path: str, config: TrainConfig) -> tuple[Any, Any]:
    """(model, processor); vision tower frozen and LoRA added as the config says.

    Raises :class:`ModelNotFound` (a ``ValueError``) before loading anything when the model is
    not there (:func:`resolve_model`)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_path, local = resolve_model(model_path)
    try:
        processor = AutoProcessor.from_pretrained(model_path, local_files_only=local)
        model: Any = AutoModelForImageTextToText.from_pretrained(model_path, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load model {model_path!r}: {exc}") from exc
    return prepare_policy(model, config), processor


def prepare_policy(model: Any, config: TrainConfig) -> Any:
    """A loaded model made the policy the config asks for: vision tower frozen, gradient checkpointing, LoRA
    adapters in the language model only (returns the PEFT model with LoRA)."""
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
    return model


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
