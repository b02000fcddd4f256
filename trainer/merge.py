"""A trained model as a plain transformers folder: LoRA merged into the base weights, with the processor.

``mfpo train`` leaves ``final/`` as a peft LoRA adapter (``adapter_config.json`` +
``adapter_model.safetensors``) plus the processor, or, with ``--full``, a whole model.
Tools that evaluate or serve a model want neither an adapter nor peft:

* ``LlavaForConditionalGeneration.from_pretrained`` / ``AutoModelForImageTextToText``;
* vLLM, which picks its model class from ``config.json``'s ``architectures`` and maps the
  transformers >= 4.52 weight names (``model.language_model.*``, ``model.vision_tower.*``,
  ``model.multi_modal_projector.*``, ``lm_head.*``) onto its own; a leftover peft name
  (``base_layer``, ``lora_A``) is an unknown weight there;
* lmms-eval's ``llava_hf``, which reads ``AutoConfig``'s ``model_type`` (``llava`` or
  ``llava_next``), loads that class and ``AutoProcessor`` from the same folder, and uses
  ``processor.tokenizer`` and its chat template.

:func:`merge_model` therefore writes what the base model's folder holds: ``config.json``
(``architectures`` the base's class), ``generation_config.json``, the weights under the base
checkpoint's own names (transformers undoes its load-time renames on save, so a llava-hf
checkpoint keeps ``language_model.model.*``, ``vision_tower.vision_model.*``, which every
loader reads), and the base's processor files byte for byte (image processor, tokenizer,
chat template in the base's own file) -- W + (alpha / r) B A computed by peft's
``merge_and_unload`` in float32 and stored in the base's dtype. ``mfpo_merge.json``
records what was merged; it is written last, so its presence says the folder is complete.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from mfpo.config import ComponentConfig
from mfpo.storage.factory import open_store

ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"
MANIFEST = "mfpo_merge.json"
RUN_SUMMARY = "summary.json"
"""Written by ``mfpo train`` into its output as the run's last object (see trainer/cli.py)."""
PEFT_NAME_MARKS = ("lora_", "base_layer", "modules_to_save")

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class MergeError(ValueError):
    """The adapter or base cannot be merged; the message says which folder and why."""


class MergeConfig(ComponentConfig):
    """What ``mfpo merge`` (and ``mfpo train --merge``) writes."""

    dtype: Dtype = Field(
        default="auto", description="dtype of the saved weights; auto: the base model's own (config.json dtype)."
    )
    max_shard_size: str = Field(default="5GB", description="Largest safetensors shard (transformers' save_pretrained).")
    wait_s: float = Field(
        default=0.0, ge=0.0,
        description="Wait up to this many seconds for the run that writes the adapter to finish (its summary.json).",
    )
    poll_s: float = Field(default=10.0, gt=0.0, description="Seconds between looks for the run's summary.json.")


def _is_remote(uri: str) -> bool:
    return uri.startswith("s3://")


def _run_of(adapter: str) -> str:
    """The run folder of ``RUN/final`` (where ``mfpo train`` writes summary.json)."""
    return adapter.rstrip("/").rsplit("/", 1)[0] if "/" in adapter.rstrip("/") else "."


def wait_for_run(adapter: str, wait_s: float, poll_s: float = 10.0) -> None:
    """Block until the training run of ``adapter`` (``RUN/final``) has written ``RUN/summary.json``.

    Lets a job that starts with the trainer (the chart's eval Job) merge only a finished run.
    Raises :class:`MergeError` after ``wait_s`` seconds.
    """
    run = _run_of(adapter)
    store = open_store(run)
    deadline = time.monotonic() + wait_s
    while not store.exists(RUN_SUMMARY):
        if time.monotonic() >= deadline:
            raise MergeError(f"{run}: no {RUN_SUMMARY} after {wait_s:.0f}s: the training run has not finished")
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def fetch_folder(uri: str, local: Path) -> Path:
    """Copy every object under ``uri`` (a folder or ``s3://bucket/prefix``) into ``local``; returns ``local``."""
    store = open_store(uri)
    keys = list(store.list(""))
    if not keys:
        raise MergeError(f"{uri}: nothing there (is it a run's final/ folder?)")
    for key in keys:
        target = local / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(key))
    return local


def publish_folder(local: Path, uri: str) -> None:
    """Upload ``local`` to ``uri`` with :data:`MANIFEST` last, so a reader that sees it sees a whole folder."""
    store = open_store(uri, create_bucket=True)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for path in sorted(files, key=lambda p: p.name == MANIFEST):
        store.put(path.relative_to(local).as_posix(), path.read_bytes())


def _read_json(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def _torch_dtype(name: str, base_config: Any) -> Any:
    import torch

    if name == "auto":
        stored = getattr(base_config, "dtype", None) or getattr(base_config, "torch_dtype", None)
        if isinstance(stored, torch.dtype):
            return stored
        return getattr(torch, str(stored)) if stored else torch.float32
    return getattr(torch, name)


MODEL_FILES = re.compile(r"^(config\.json|generation_config\.json|adapter_.*|mfpo_merge\.json|.*\.safetensors"
                         r"|.*\.safetensors\.index\.json|.*\.bin|.*\.bin\.index\.json|.*\.pt|.*\.pth)$")
"""Files of a model folder that are the weights, their configs or an adapter; everything else is the processor's."""


def processor_files(folder: Path) -> list[Path]:
    """The processor's files of a model folder (tokenizer, image processor, chat template, ...), top level only."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not MODEL_FILES.match(p.name))


def _write_processor(out: Path, sources: list[Path], hub_id: str) -> None:
    """Copy the processor files, byte for byte, from the first of ``sources`` that loads as a processor,
    so the merged folder keeps the base's layout (e.g. llava-hf's processor-only chat_template.json, which
    leaves the tokenizer without a template and lmms-eval's llava_hf on its own Vicuna one); a hub base
    without local files: transformers' ``save_pretrained``."""
    from transformers import AutoProcessor

    for folder in sources:
        try:
            AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError):
            continue
        for path in processor_files(folder):
            shutil.copy2(path, out / path.name)
        return
    try:
        AutoProcessor.from_pretrained(hub_id).save_pretrained(str(out))
    except (OSError, ValueError, TypeError) as exc:
        raise MergeError(f"no processor in {', '.join(map(str, sources))} nor for {hub_id!r}: {exc}") from exc


def check_plain_weights(names: list[str]) -> None:
    """Raise when a weight name is peft's (an unmerged adapter), which vLLM and transformers would not load."""
    leftover = [n for n in names if any(mark in n for mark in PEFT_NAME_MARKS)]
    if leftover:
        raise MergeError(f"{len(leftover)} weight(s) still carry peft names, e.g. {leftover[:3]}")


def merge_local(adapter: Path, base: str | None, out: Path, config: MergeConfig) -> Path:
    """Merge the adapter folder ``adapter`` into ``base`` (or copy a full model) and save to ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    adapter_config = _read_json(adapter, ADAPTER_CONFIG)
    if adapter_config is None and _read_json(adapter, MODEL_CONFIG) is None:
        raise MergeError(f"{adapter}: neither {ADAPTER_CONFIG} (a LoRA run) nor {MODEL_CONFIG} (a full model)")
    if adapter_config is not None:
        base = base or adapter_config.get("base_model_name_or_path")
        if not base:
            raise MergeError(f"{adapter}: {ADAPTER_CONFIG} names no base model; give --base")
        source = base
    else:
        source = str(adapter)  # full fine-tuning: final/ is the model itself
    local_only = Path(source).exists()
    try:
        target_dtype = _torch_dtype(config.dtype, AutoConfig.from_pretrained(source, local_files_only=local_only))
        model: Any = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32,
                                                                 local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise MergeError(f"cannot load model {source!r}: {exc}") from exc
    if adapter_config is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    check_plain_weights(list(model.state_dict()))
    model = model.to(target_dtype).eval()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(str(out), max_shard_size=config.max_shard_size)
    sources = [Path(source)] if local_only else []
    _write_processor(out, [*sources, adapter], source)
    manifest = {"base": base or source, "adapter": str(adapter) if adapter_config else None,
                "dtype": str(target_dtype).removeprefix("torch."),
                "architectures": list(getattr(model.config, "architectures", None) or [])}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def merge_model(adapter: str, out: str, base: str | None = None, config: MergeConfig | None = None) -> str:
    """Write ``adapter`` (a run's ``final/``: LoRA adapter or full model) merged into ``base`` as a plain
    transformers folder at ``out``. Both may be local folders or ``s3://`` URIs. Returns ``out``."""
    config = config or MergeConfig()
    if config.wait_s:
        wait_for_run(adapter, config.wait_s, config.poll_s)
    with tempfile.TemporaryDirectory(prefix="mfpo-merge-") as tmp:
        work = Path(tmp)
        local_adapter = fetch_folder(adapter, work / "adapter") if _is_remote(adapter) else Path(adapter)
        if not local_adapter.is_dir():
            raise MergeError(f"{adapter}: not a folder")
        if _is_remote(out):
            publish_folder(merge_local(local_adapter, base, work / "merged", config), out)
        else:
            merge_local(local_adapter, base, Path(out), config)
    return out

