"""The testbed's data on disk: SFT rows, preference items, and preference datasets through the real pipeline.

- :func:`write_sft`: ``sft/`` with ``images/*.png`` and ``sft.jsonl`` (:mod:`trainer.sft`'s format): per SFT
  scene its caption and ``questions_per_scene`` short questions.
- :func:`write_items`: ``items.jsonl`` in the native item format (exact annotations: boxes, and polygons
  for stars and boxes) + ``truth.jsonl`` for a split's scenes: chosen = the faithful caption, rejected = a
  hallucinated one (:func:`mfpo.testbed.world.hallucinated_caption`).
- :func:`generate_dataset`: ``mfpo generate``'s embedded executor (:func:`mfpo.pipeline.embedded.run_generate`)
  over those items: keywords (multipartite graph + PageRank on the chosen caption) -> regions from the
  item's exact annotations (or the whole image / a random 20% rectangle: MFPO Table 8) -> the siblings'
  negatives (mDPO's crop, AdaViP's removal) -> MFPO's diffusion noise at step ``t``, at the model's
  resolution. One dataset holds every kind made from the same regions (a column per kind).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfpo.images import encode_png
from mfpo.testbed.config import NegativesKind, WorldConfig
from mfpo.testbed.world import CAPTION_QUESTION, Split, preference_item, scene_questions, scenes

REGION_MODES = {"mfpo": "annotations", "global": "global", "random": "random", "mdpo": "annotations",
                "adavip": "annotations"}
"""``mfpo generate``'s region mode for each kind of rejected image: MFPO's noise over the exact annotation
regions (and the siblings', which use the same keyword regions), or MFPO Table 8's whole image / random 20%."""
SIBLINGS = ("mdpo", "adavip")


def dataset_key(kind: NegativesKind, noise_step: int) -> str:
    """The dataset a kind of negatives lives in: ``regions-t500`` holds MFPO's region noise and the siblings'
    negatives (one dataset, one column per kind); ``global-t500`` / ``random-t500`` the Table 8 ablations."""
    mode = REGION_MODES[kind]
    return f"{'regions' if mode == 'annotations' else mode}-t{noise_step}"


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(image, compress_level=1))


def write_sft(world: WorldConfig, out: Path) -> Path:
    """Write the SFT folder (``images/``, ``sft.jsonl``) and return it. Rows: caption, then the questions."""
    out = Path(out)
    lines = []
    for s in scenes(world, "sft"):
        ref = f"images/{s.id}.png"
        _write_png(out / ref, s.image)
        lines.append({"id": f"{s.id}/caption", "image": ref, "question": CAPTION_QUESTION, "answer": s.caption})
        rng = np.random.default_rng([world.seed, 9, s.index])
        for k, q in enumerate(scene_questions(s, world, world.questions_per_scene, rng)):
            lines.append({"id": f"{s.id}/{q.type}{k}", "image": ref, "question": q.question, "answer": q.answer})
    (out / "sft.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return out


def write_items(world: WorldConfig, split: Split, out: Path) -> Path:
    """Write ``split``'s preference items (``items.jsonl``, ``truth.jsonl``, ``images/``); returns items.jsonl."""
    out = Path(out)
    items, truth = [], []
    for s in scenes(world, split):
        ref = f"images/{s.id}.png"
        _write_png(out / ref, s.image)
        item, facts = preference_item(s, world, ref)
        items.append(item.model_dump_json(exclude_none=True))
        truth.append(json.dumps(facts))
    (out / "items.jsonl").write_text("".join(x + "\n" for x in items), encoding="utf-8")
    (out / "truth.jsonl").write_text("".join(x + "\n" for x in truth), encoding="utf-8")
    return out / "items.jsonl"


def generate_config(mode: str, noise_step: int, model_resolution: int, kinds: Sequence[str],
                    siblings: Mapping[str, Any] | None = None) -> Any:
    """The ``GenerateConfig`` of one preference dataset: region mode (annotations | global | random), noise step
    at the model's resolution, and the kinds of rejected images (``mfpo`` first, so it is ``rejected_image``);
    ``siblings``: ``negatives`` settings of the other kinds (mdpo, adavip with its CLIP)."""
    from mfpo.pipeline.config import GenerateConfig

    options: dict[str, Any] = {
        "regions": {"mode": mode, "random_fraction": 0.2},
        "perturbation": {"noise_step": noise_step, "model_resolution": model_resolution},
        "negatives": {"kinds": list(kinds), **(siblings or {})},
    }
    return GenerateConfig.model_validate(options)


def generate_dataset(items: Path, out: Path, config: Any, workers: int = 1) -> dict[str, Any]:
    """Run ``mfpo generate`` (embedded) over ``items`` into ``out`` with ``config`` unless ``out/dataset.jsonl``
    exists; returns the run summary (``summary.json``). Every item must become a record (the annotations are
    exact; a sibling's fallback, e.g. no object AdaViP can remove, is recorded and counted, not failed)."""
    from mfpo.pipeline.embedded import run_generate

    out = Path(out)
    if (out / "dataset.jsonl").is_file() and (out / "summary.json").is_file():
        return dict(json.loads((out / "summary.json").read_text()))
    summary = run_generate(Path(items), out, config, workers=workers, chunk_size=64, gallery=False)
    if summary.failed:
        raise RuntimeError(f"{out}: {summary.failed} items failed in the pipeline ({summary.failure_reasons})")
    return summary.as_dict()
