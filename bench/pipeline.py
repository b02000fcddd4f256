"""Benchmark of the embedded pipeline: items/s per stage and end to end, per core.

Runs every stage in this process on one core (torch and BLAS pinned to one thread),
on procedural scenes at 256^2, 512^2 and 1024^2, and measures how the keyword stage
grows with caption length. Prints ONE JSON line.

    python bench/pipeline.py [--n 24] [--sizes 256,512,1024] [--out /tmp/mfpo-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from mfpo.images import encode_png
from mfpo.keywords import extract_keywords
from mfpo.perturbation import alpha_bar
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.embedded import outcomes_key
from mfpo.pipeline.resources import build_resources
from mfpo.readers import ReadItem, read_items
from mfpo.stages import GRAPH, Chunk, MemoryChunkIO, describe_item, run_stage
from mfpo.storage.local import LocalStore
from mfpo.synth import SynthConfig, generate_scenes


def _per_s(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else float("inf")


def bench_size(size: int, n: int, work: Path, config: GenerateConfig) -> dict:
    """Per-stage and end-to-end items/s on one core for ``n`` scenes of ``size`` x ``size``: the stage graph on one
    chunk of the ``n`` items, as the embedded runner runs it (perturb includes PNG encoding and the writes)."""
    scene_dir = work / f"scenes-{size}"
    items_path = generate_scenes(SynthConfig(n=n, seed=size, width=size, height=size), scene_dir)
    rows = [r for r in read_items(items_path) if isinstance(r, ReadItem)]
    resources = build_resources(config.regions)
    store = LocalStore(work / f"out-{size}")
    extract_keywords(rows[0].item.chosen, config.keywords, embedder=resources.embedder)  # warm-up: model load,
    alpha_bar(config.perturbation)  # and the noise schedule's first computation

    t: dict[str, float] = {"decode": 0.0}
    start = time.perf_counter()
    described, images, decoded = [], {}, {}
    for index, r in enumerate(rows):
        data = r.image_bytes if r.image_bytes is not None else Path(r.item.image).read_bytes()
        staged, image = describe_item(index, r.row, r.item, data, config)
        described.append(staged)
        images[staged.id], decoded[staged.id] = data, image
    t["decode"] = time.perf_counter() - start
    io = MemoryChunkIO(Chunk(key=f"bench-{size}", items=described), images, decoded, store, outcomes_key,
                       config.limits)
    for stage in GRAPH:
        t0 = time.perf_counter()
        run_stage(stage, io, config, resources)
        t[stage.name] = time.perf_counter() - t0
    total = time.perf_counter() - start
    return {
        "pixels": size * size,
        "items": len(rows),
        "end_to_end_items_per_s": _per_s(len(rows), total),
        "stage_items_per_s": {k: _per_s(len(rows), v) for k, v in t.items()},
        "stage_share": {k: round(v / total, 3) for k, v in t.items()},
    }


def bench_png_levels(size: int, levels: tuple[int, ...] = (1, 6), repeats: int = 3) -> dict:
    """Encode time of one noised ``size``^2 scene at each zlib level, side by side, and the ratio."""
    from mfpo.perturbation import PerturbationConfig, alpha_bar, perturb_in_mask
    from mfpo.synth import make_scene

    image = make_scene(SynthConfig(n=1, seed=1, width=size, height=size), 0).image
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[size // 4 : size // 2, size // 4 : 3 * size // 4] = True
    rejected = perturb_in_mask(image, mask, alpha_bar(PerturbationConfig()), 0)
    out: dict = {"pixels": size * size, "mask_fraction": float(mask.mean())}
    for level in levels:
        t0 = time.perf_counter()
        for _ in range(repeats):
            data = encode_png(rejected, level)
        out[f"level{level}_ms"] = round((time.perf_counter() - t0) / repeats * 1000, 1)
        out[f"level{level}_bytes"] = len(data)
    out["time_ratio_default6_to_1"] = round(out["level6_ms"] / out["level1_ms"], 2)
    return out


def bench_caption_length(config: GenerateConfig, repeats: int = 5) -> list[dict]:
    """Keyword-stage time as the answer grows (1, 2, 4, 8, 16 sentences)."""
    from mfpo.keywords.vectors import PhraseEmbedder

    embedder = PhraseEmbedder(cache_size=0)  # no memo: every repeat embeds its phrases again
    sentences = [
        "A red car is parked next to a wooden fence.",
        "Two small dogs are playing on the green grass.",
        "A woman in a blue dress holds an umbrella.",
        "Behind them there is a tall brick building with large windows.",
        "A yellow bicycle leans against a lamp post near the sidewalk.",
        "Several birds sit on the power lines above the street.",
        "On the left, a man is reading a newspaper on a bench.",
        "The sky is cloudy and the trees have orange leaves.",
    ]
    out = []
    extract_keywords(sentences[0], config.keywords, embedder=embedder)
    for n_sent in (1, 2, 4, 8, 16):
        text = " ".join(sentences[i % len(sentences)] for i in range(n_sent))
        t0 = time.perf_counter()
        for _ in range(repeats):
            extract_keywords(text, config.keywords, embedder=embedder)
        dt = (time.perf_counter() - t0) / repeats
        out.append({"sentences": n_sent, "words": len(text.split()), "ms_per_item": round(dt * 1000, 2)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=24, help="scenes per image size")
    parser.add_argument("--sizes", default="256,512,1024", help="comma-separated square sizes")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = args.out or Path(tempfile.mkdtemp(prefix="mfpo-bench-"))
    config = GenerateConfig.model_validate({"regions": {"mode": "annotations"}})
    try:
        sizes = [bench_size(int(s), args.n, work, config) for s in args.sizes.split(",")]
        length = bench_caption_length(config)
        png = bench_png_levels(max(int(s) for s in args.sizes.split(",")))
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    base = sizes[0]
    result = {
        "bench": "pipeline",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores_used": 1,
                    "torch": torch.__version__},
        "regions_mode": config.regions.mode,
        "noise_step": config.perturbation.noise_step,
        "by_size": sizes,
        "cost_vs_pixels": [
            {"pixels": s["pixels"],
             "time_ratio_to_smallest": round(base["end_to_end_items_per_s"] / s["end_to_end_items_per_s"], 2),
             "pixel_ratio": s["pixels"] / base["pixels"]}
            for s in sizes
        ],
        "keywords_vs_caption_length": length,
        "png_levels": png,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
