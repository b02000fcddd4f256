"""Supervised fine-tuning: the instruction-tuning stage before preference optimisation (MFPO sec. 4.1).

LLaVA's stages 1-2 ("the first two stages follow standard LLaVA training") teach the model to answer;
MFPO is the third. Here the loss is the mean cross-entropy of the answer tokens (the EOS included)
given the image and the question, prompts and image tokens masked exactly as the preference
batches mask them (:mod:`trainer.collate`: the model's chat template, ``labels`` -100 on the
prompt). The hallucination testbed trains its base model with it from random weights, every
parameter (vision tower included) unless ``freeze_vision_tower``.

From random weights the language model learns the captions' words long before it looks at the pixels
(measured: a from-scratch 3-layer CLIP tower + 2-layer Llama stayed at the text-only loss, answering every
"Is there a ...?" the same way whatever the image, after 1,700 steps). LLaVA starts from a pretrained CLIP;
``vision_epochs`` stands in for that: the vision tower first learns to predict, from its mean-pooled
features, which informative words are said about each image (:func:`pretrain_vision`), and then SFT
trains the projector and the language model (and the tower, unless ``freeze_vision_tower``).

Rows are encoded once (the processor's image tensors, one per distinct image, and token ids), then
trained for ``epochs`` passes in a seeded order (a fresh permutation per pass) with AdamW, warmup and
the run's learning-rate curve (:mod:`trainer.schedule`) and gradient clipping. Outputs in
``output_dir``: ``metrics.jsonl`` (step, loss, lr, grad_norm every ``logging_steps``) and
``final/`` (a plain transformers folder with the processor, the base for ``mfpo train``).

Data: :class:`SftRow` lists, or a folder with ``sft.jsonl`` (``{"id", "image", "question", "answer"}``
per line, image paths relative to the folder; :func:`read_sft_rows`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from trainer.collate import prompt_text
from trainer.config import SftConfig, TrainConfig
from trainer.logps import IGNORE_INDEX
from trainer.schedule import learning_rate

SFT_FILE = "sft.jsonl"


@dataclass(frozen=True)
class SftRow:
    """One supervised example: an image (by key, shared between rows), a question and its answer."""

    id: str
    image_key: str
    question: str
    answer: str


@dataclass
class Encoded:
    """Token ids and labels of one row (prompt masked), and the index of its image tensor."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    image: int


def read_sft_rows(folder: Path | str) -> tuple[list[SftRow], dict[str, Image.Image]]:
    """The rows of ``folder/sft.jsonl`` and their images (RGB, keyed by their relative path)."""
    root = Path(folder)
    rows, images = [], {}
    for line in (root / SFT_FILE).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        data = json.loads(line)
        key = str(data["image"])
        if key not in images:
            with Image.open(root / key) as im:
                images[key] = im.convert("RGB")
        rows.append(SftRow(str(data["id"]), key, str(data["question"]), str(data["answer"])))
    if not rows:
        raise ValueError(f"{root / SFT_FILE}: no rows")
    return rows, images


def _image_expansion(processor: Any, image: Image.Image) -> Callable[[str], str]:
    """The processor's text rewrite for one image (``<image>`` -> its feature tokens), learned from one call,
    so the token ids of many rows come from the tokenizer alone instead of re-processing every image."""
    token = processor.image_token
    ids = processor(images=[image], text=[token])["input_ids"][0]
    count = sum(1 for i in ids if i == processor.tokenizer.convert_tokens_to_ids(token))
    return lambda text: text.replace(token, token * count)


def encode_rows(processor: Any, rows: Sequence[SftRow], images: dict[str, Image.Image],
                chunk: int = 256) -> tuple[list[Encoded], torch.Tensor]:
    """(encoded rows, pixel values (n_images, 3, S, S)): every row's ``prompt + " " + answer + EOS`` with the
    labels -100 on the prompt (the common prefix with the prompt alone, as :func:`trainer.collate.collate`)."""
    keys = list(dict.fromkeys(r.image_key for r in rows))
    index = {k: i for i, k in enumerate(keys)}
    pixels = torch.cat([processor.image_processor(images=[images[k] for k in keys[s:s + chunk]],
                                                  return_tensors="pt")["pixel_values"]
                        for s in range(0, len(keys), chunk)])
    eos = processor.tokenizer.eos_token or ""
    expand = _image_expansion(processor, images[keys[0]])
    out: list[Encoded] = []
    for s in range(0, len(rows), chunk):
        part = rows[s:s + chunk]
        prompts = [expand(prompt_text(processor, r.question)) for r in part]
        full = processor.tokenizer([f"{p} {r.answer}{eos}" for p, r in zip(prompts, part, strict=True)])["input_ids"]
        heads = processor.tokenizer(prompts)["input_ids"]
        for r, ids, head in zip(part, full, heads, strict=True):
            cut = 0
            while cut < min(len(ids), len(head)) and ids[cut] == head[cut]:
                cut += 1
            if cut == len(ids):
                raise ValueError(f"row {r.id}: the answer adds no tokens")
            labels = list(ids)
            labels[:cut] = [IGNORE_INDEX] * cut
            out.append(Encoded(torch.tensor(ids), torch.tensor(labels), index[r.image_key]))
    return out, pixels


def pad_batch(rows: Sequence[Encoded], pixels: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` and the rows' ``pixel_values``."""
    length = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n], labels[i, :n], mask[i, :n] = r.input_ids, r.labels, 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "pixel_values": pixels[torch.tensor([r.image for r in rows])]}


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (answer) tokens of the batch."""
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX)


def step_order(n: int, config: SftConfig) -> list[list[int]]:
    """Row indices of every optimizer step: ``epochs`` seeded permutations, cut into batches (the last pass
    of a fractional ``epochs`` is cut short)."""
    total = max(1, math.ceil(config.epochs * n / config.batch_size))
    generator = torch.Generator().manual_seed(config.seed)
    flat: list[int] = []
    while len(flat) < total * config.batch_size:
        flat += torch.randperm(n, generator=generator).tolist()
    return [flat[k * config.batch_size:(k + 1) * config.batch_size] for k in range(total)]


def word_targets(processor: Any, rows: Sequence[SftRow], n_images: int, image_index: dict[str, int]) -> torch.Tensor:
    """(n_images, words) multi-hot over the *informative* answer tokens: those said about some images and not
    about others (a token in every image's answers, or in none, tells nothing about the pixels)."""
    vocab = len(processor.tokenizer)
    targets = torch.zeros((n_images, vocab))
    ids = processor.tokenizer([r.answer for r in rows], add_special_tokens=False)["input_ids"]
    for r, tokens in zip(rows, ids, strict=True):
        targets[image_index[r.image_key], tokens] = 1.0
    share = targets.mean(dim=0)
    return targets[:, (share > 0) & (share < 1)]


def pretrain_vision(model: Any, pixels: torch.Tensor, targets: torch.Tensor, config: SftConfig,
                    log: Callable[[dict[str, Any]], None]) -> None:
    """Train the vision tower (and a throw-away linear head) to predict each image's informative answer words
    (:func:`word_targets`) from its mean-pooled features at LLaVA's feature layer (patches only, as
    ``vision_feature_select_strategy="default"``); binary cross-entropy per word. Stands in for CLIP's
    pretraining (see ``SftConfig.vision_epochs``)."""
    tower = model.model.vision_tower
    layer = model.config.vision_feature_layer
    head = torch.nn.Linear(tower.config.hidden_size, targets.shape[1])
    with torch.no_grad():  # start from each word's base rate: the head then only learns what the pixels add
        share = targets.mean(dim=0).clamp(1e-4, 1 - 1e-4)
        head.bias.copy_(torch.log(share / (1 - share)))
    params = [*tower.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.vision_learning_rate)
    order_config = config.model_copy(update={"epochs": config.vision_epochs, "batch_size": config.vision_batch_size})
    steps = step_order(len(pixels), order_config)
    schedule = TrainConfig(learning_rate=config.vision_learning_rate, lr_scheduler=config.lr_scheduler,
                           warmup_ratio=config.warmup_ratio, report_to="none")
    tower.train()
    for step, idx in enumerate(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(schedule, step, len(steps))
        hidden = tower(pixels[torch.tensor(idx)], output_hidden_states=True).hidden_states[layer][:, 1:]
        loss = F.binary_cross_entropy_with_logits(head(hidden.mean(dim=1)), targets[torch.tensor(idx)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % config.logging_steps == 0 or step + 1 == len(steps):
            log({"vision_step": step + 1, "vision_loss": round(float(loss.detach()), 6)})


def sft_train(config: SftConfig, rows: Sequence[SftRow], images: dict[str, Image.Image], model_path: str,
              output_dir: Path | str, progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Fine-tune the model at ``model_path`` on ``rows``; writes ``metrics.jsonl`` and ``final/`` under
    ``output_dir`` and returns a summary (steps, first and last logged loss, seconds, final path).

    ``progress(step, loss)`` is called after every optimizer step.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    processor = AutoProcessor.from_pretrained(model_path, local_files_only=True)
    model: Any = AutoModelForImageTextToText.from_pretrained(model_path, local_files_only=True)
    encoded, pixels = encode_rows(processor, rows, images)
    pad_id = processor.tokenizer.pad_token_id
    metrics = (out / "metrics.jsonl").open("w", encoding="utf-8")

    def log(line: dict[str, Any]) -> None:
        metrics.write(json.dumps(line) + "\n")
        metrics.flush()

    if config.vision_epochs > 0:
        keys = list(dict.fromkeys(r.image_key for r in rows))
        targets = word_targets(processor, rows, len(keys), {k: i for i, k in enumerate(keys)})
        pretrain_vision(model, pixels, targets, config, log)
        vision_seconds = time.perf_counter() - started
    else:
        vision_seconds = 0.0
    if config.freeze_vision_tower:  # after its pretraining, as LLaVA keeps its pretrained CLIP fixed
        for name, p in model.named_parameters():
            if "vision_tower" in name:
                p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = TrainConfig(learning_rate=config.learning_rate, lr_scheduler=config.lr_scheduler,
                           warmup_ratio=config.warmup_ratio, report_to="none")
    steps = step_order(len(encoded), config)
    model.train()
    losses: list[float] = []
    window: list[float] = []
    try:
        for step, idx in enumerate(steps):
            lr = learning_rate(schedule, step, len(steps))
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = pad_batch([encoded[i] for i in idx], pixels, pad_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           pixel_values=batch["pixel_values"]).logits
            loss = sft_loss(logits, batch["labels"])
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or math.inf)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            window.append(float(loss.detach()))
            if (step + 1) % config.logging_steps == 0 or step + 1 == len(steps):
                mean = sum(window) / len(window)
                losses.append(mean)
                log({"step": step + 1, "loss": round(mean, 6), "lr": lr, "grad_norm": round(float(norm), 6)})
                window = []
            if progress is not None:
                progress(step + 1, float(loss.detach()))
    finally:
        metrics.close()
    model.eval()
    final = out / "final"
    model.save_pretrained(final)
    processor.save_pretrained(final)
    summary = {"steps": len(steps), "rows": len(encoded), "images": int(pixels.shape[0]),
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "vision_seconds": round(vision_seconds, 2), "seconds": round(time.perf_counter() - started, 2),
               "final": str(final)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
