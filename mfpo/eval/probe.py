"""The modality probe (MFPO Fig. 1, AdaViP Fig. 1): does the model's preference depend on the image?

For every item (m, x, y_w, y_l, m') of a dataset made by ``mfpo generate`` (original image m,
question x, chosen / rejected answers, rejected image m'), with summed answer log-probs
``log p(y | x, image)`` from the trainer's own forward (:mod:`mfpo.eval.logps`):

- text margin   = log p(y_w | m) - log p(y_l | m): the text preference DPO trains;
- image margin  = log p(y_w | m) - log p(y_w | m'): does the true image make the chosen answer
  likelier than the rejected image does (what MFPO's image term trains);
- noise margin  = log p(y_w | n) - log p(y_l | n), with n the image replaced by full diffusion
  noise (``ProbeConfig.noise_step``, 999 of 1000 by default, over the whole image): a model
  that still prefers y_w when the image is destroyed answers from text memory (MFPO Fig. 1b,
  "the disparity between the original and degraded images is only 9%").

The summary reports the share of items preferring y_w with the true image and with noise,
their gap, the share preferring the true image, and the margins' mean / median / std. With a
second (base) model, :func:`compare_probes` adds the implicit rewards of training (trained
minus base log-prob, as DPO's reward without beta) for the text and the image pair — the
"modality rewards" of MFPO Fig. 1a.
"""

from __future__ import annotations

import statistics
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mfpo.eval.config import ProbeConfig
from mfpo.eval.logps import answer_logps
from mfpo.perturbation.config import PerturbationConfig
from mfpo.perturbation.noise import perturb_in_mask
from mfpo.perturbation.schedule import alpha_bar


@dataclass(frozen=True)
class ProbeItem:
    """One preference item; its images are read batch by batch (:func:`probe_images`), never all at once."""

    id: str
    question: str
    chosen: str
    rejected: str
    image_path: Path
    rejected_image_path: Path


def noise_image(image: Image.Image, item_id: str, config: ProbeConfig) -> Image.Image:
    """``image`` under forward diffusion noise at ``config.noise_step`` everywhere (seeded by item id and seed)."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    mask = np.ones(array.shape[:2], dtype=bool)
    a = alpha_bar(PerturbationConfig(noise_step=config.noise_step))
    seed = zlib.crc32(item_id.encode("utf-8")) ^ config.seed
    return Image.fromarray(perturb_in_mask(array, mask, a, seed))


def load_probe_items(dataset_dir: Path, config: ProbeConfig) -> list[ProbeItem]:
    """The items of a dataset folder (``dataset.jsonl`` + images, as ``mfpo generate`` writes it)."""
    from mfpo.pipeline.dataset import read_dataset

    root = Path(dataset_dir)
    items: list[ProbeItem] = []
    for record in read_dataset(root):
        if config.limit is not None and len(items) >= config.limit:
            break
        items.append(ProbeItem(record.id, record.question, record.chosen, record.rejected, root / record.image,
                               root / record.rejected_image))
    if not items:
        raise ValueError(f"{dataset_dir}: the dataset has no items to probe")
    return items


def probe_images(item: ProbeItem, config: ProbeConfig) -> tuple[Image.Image, Image.Image, Image.Image]:
    """(original m, rejected m', full-noise n) of ``item``, RGB."""
    with Image.open(item.image_path) as im:
        image = im.convert("RGB")
    with Image.open(item.rejected_image_path) as im:
        rejected = im.convert("RGB")
    return image, rejected, noise_image(image, item.id, config)


def run_probe(model: Any, processor: Any, device: torch.device, items: Sequence[ProbeItem], config: ProbeConfig,
              progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One row per item: the five log-probs, the three margins and the three preferences."""
    rows = []
    model.eval()
    for start in range(0, len(items), config.batch_size):
        chunk = items[start : start + config.batch_size]
        images = [probe_images(i, config) for i in chunk]
        args = ([i.id for i in chunk], [i.question for i in chunk], [i.chosen for i in chunk],
                [i.rejected for i in chunk])
        clean = answer_logps(model, processor, device, *args, [m[0] for m in images], [m[1] for m in images])
        noisy = answer_logps(model, processor, device, *args, [m[2] for m in images], None)
        for k, item in enumerate(chunk):
            w, lose, w_perturbed = (float(clean[n][k]) for n in ("chosen", "rejected", "chosen_perturbed"))
            w_noise, lose_noise = float(noisy["chosen"][k]), float(noisy["rejected"][k])
            rows.append({
                "id": item.id, "logp_chosen": w, "logp_rejected": lose, "logp_chosen_rejected_image": w_perturbed,
                "logp_chosen_noise": w_noise, "logp_rejected_noise": lose_noise,
                "text_margin": w - lose, "image_margin": w - w_perturbed, "noise_margin": w_noise - lose_noise,
                "prefers_chosen": w > lose, "prefers_original_image": w > w_perturbed,
                "prefers_chosen_noise": w_noise > lose_noise,
            })
        if progress:
            progress(len(chunk))
    return rows


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "median": statistics.median(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def summarize_probe(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Preference rates (percent), their gap, and margin statistics over ``rows``."""
    if not rows:
        raise ValueError("no probe rows to summarize")
    n = len(rows)
    clean = 100.0 * sum(bool(r["prefers_chosen"]) for r in rows) / n
    noise = 100.0 * sum(bool(r["prefers_chosen_noise"]) for r in rows) / n
    return {
        "n": n,
        "prefers_chosen": clean,
        "prefers_chosen_noise": noise,
        "noise_gap": clean - noise,
        "prefers_original_image": 100.0 * sum(bool(r["prefers_original_image"]) for r in rows) / n,
        "text_margin": _stats([float(r["text_margin"]) for r in rows]),
        "image_margin": _stats([float(r["image_margin"]) for r in rows]),
        "noise_margin": _stats([float(r["noise_margin"]) for r in rows]),
    }


def compare_probes(base: Sequence[Mapping[str, Any]], trained: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Implicit rewards of training per item pair: text reward margin (trained - base text margin) and image
    reward margin (trained - base image margin), their means and the share of items where each rose."""
    by_id = {str(r["id"]): r for r in base}
    pairs = [(by_id[str(r["id"])], r) for r in trained if str(r["id"]) in by_id]
    if not pairs:
        raise ValueError("the two probes share no item")
    text = [float(t["text_margin"]) - float(b["text_margin"]) for b, t in pairs]
    image = [float(t["image_margin"]) - float(b["image_margin"]) for b, t in pairs]
    return {"n": len(pairs), "text_reward_margin": _stats(text), "image_reward_margin": _stats(image),
            "text_reward_up": 100.0 * sum(v > 0 for v in text) / len(text),
            "image_reward_up": 100.0 * sum(v > 0 for v in image) / len(image)}
