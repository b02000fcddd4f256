"""Load a LLaVA-class model for evaluation: transformers folder (or hub id), optionally + a peft LoRA adapter.

The same loading as the trainer's policy (``trainer/model.py``): ``AutoProcessor`` and
``AutoModelForImageTextToText`` (``LlavaForConditionalGeneration`` for LLaVA-1.5,
``LlavaNextForConditionalGeneration`` for LLaVA-NeXT), ``local_files_only`` when the path
exists, so nothing is downloaded for a local folder. An adapter folder (``mfpo train``'s
``final/`` holds ``adapter_config.json`` and the processor) is applied with
``PeftModel.from_pretrained`` and kept unmerged: answers are those of base + adapter exactly
as trained. The processor is read from the adapter folder when it has one (``mfpo train``
saves it there), else from the base model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mfpo.devices import resolve_device, resolve_dtype
from mfpo.eval.config import ModelSpec

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
"""Files that mark a folder holding a saved processor (transformers 5 writes the first, 4.x the second)."""


class ModelLoadError(ValueError):
    """The model, processor or adapter cannot be loaded; the message says which and why."""


def resolve_spec(spec: ModelSpec) -> tuple[str, str | None]:
    """(base model, adapter or None): an adapter folder given as ``model`` names its base in adapter_config.json."""
    config = Path(spec.model) / "adapter_config.json"
    if spec.adapter is None and config.is_file():
        base = json.loads(config.read_text()).get("base_model_name_or_path")
        if not base:
            raise ModelLoadError(f"{config} names no base_model_name_or_path: pass the base model and --adapter")
        return str(base), spec.model
    return spec.model, spec.adapter


def load_llava(spec: ModelSpec) -> tuple[Any, Any, torch.device]:
    """(model in eval mode on its device, processor, device) for ``spec``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base, adapter = resolve_spec(spec)
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    processor_path = base
    if adapter is not None and any((Path(adapter) / f).is_file() for f in PROCESSOR_FILES):
        processor_path = adapter
    try:
        processor = AutoProcessor.from_pretrained(processor_path, local_files_only=Path(processor_path).exists())
        model: Any = AutoModelForImageTextToText.from_pretrained(base, local_files_only=Path(base).exists(),
                                                                 dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {base!r}: {exc}") from exc
    if adapter:
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise ModelLoadError("a LoRA adapter needs peft: pip install 'mfpo[eval]'") from exc
        try:
            model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load adapter {adapter!r} onto {base!r}: {exc}") from exc
    model.to(device).eval()
    return model, processor, device
