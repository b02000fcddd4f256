"""Benchmark of the grounded region stage: grounding, SAM encoder, SAM decoder, whole stage.

Each is measured twice in the same run: the naive baseline (one image at a time,
float32, segment-anything's own attention, ``SamPredictor.set_image`` per image) and the
batched path of
:class:`mfpo.regions.grounded.GroundedProvider` (images batched through the detector
and the SAM encoder, SDPA attention, bf16 autocast on CUDA). Prints ONE JSON line with images/s and
the speedup ratios, and the SAM encoder's achieved TFLOP/s (FLOPs counted by
``torch.utils.flop_counter`` on one image, not assumed).

CPU (default): real ``vit_b`` SAM architecture with random weights, the tiny
GroundingDINO of ``mfpo models tiny``, small batch. GPU (H100 SXM: 989 dense bf16 TFLOP/s)::

    python bench/regions.py --n 64 --size 1024 --sam-type vit_h --grounding grounding-dino-tiny \
        --batch-sizes 1,2,4,8,16,32 --device cuda --peak-tflops 989 | tee -a bench/results/regions.jsonl

CPU::

    python bench/regions.py --n 2 --size 512 --sam-type vit_b --batch-sizes 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from mfpo.grounding import GroundingConfig, ZeroShotDetector
from mfpo.models.tiny import write_tiny_models
from mfpo.regions.base import RegionRequest
from mfpo.regions.grounded import GroundedProvider
from mfpo.segmentation import SamConfig, SamSegmenter
from mfpo.segmentation.sam import build_sam_architecture
from mfpo.synth import SynthConfig, make_scene


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 1) -> float:
    """Seconds per call of ``fn`` (after one warm-up call), synchronizing CUDA."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def write_grounding_dino_tiny_architecture(tiny_dir: Path, out_dir: Path) -> Path:
    """GroundingDINO-tiny-sized model (Swin-T backbone, BERT-base text encoder: the
    ``GroundingDinoConfig()`` defaults) with random weights, the tiny folder's tokenizer and
    the real processor sizes (shortest edge 800, longest 1333), saved as a transformers folder."""
    from transformers import (
        AutoProcessor,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    tokenizer = AutoProcessor.from_pretrained(tiny_dir).tokenizer
    config = GroundingDinoConfig(text_config={"model_type": "bert", "vocab_size": len(tokenizer)})
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).save_pretrained(out_dir)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def encoder_tflop_per_image(segmenter: SamSegmenter, image: np.ndarray) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x, _ = segmenter.preprocess(image)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        segmenter.model.image_encoder(x[None].to(segmenter.device))
    return counter.get_total_flops() / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=4, help="images")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--sam-type", default="vit_b", help="vit_h | vit_l | vit_b | vit_tiny (random weights)")
    parser.add_argument("--batch-sizes", default="4", help="comma-separated encoder batch sizes to sweep")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device bf16 peak, for utilisation")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--grounding", default="tiny", choices=["tiny", "grounding-dino-tiny"],
                        help="tiny: `mfpo models tiny`; grounding-dino-tiny: that architecture, random weights")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mfpo-bench-regions-"))
    tiny = write_tiny_models(work / "tiny")
    grounding_path = tiny["grounding_dino"]
    if args.grounding == "grounding-dino-tiny":
        grounding_path = write_grounding_dino_tiny_architecture(grounding_path, work / "grounding-dino-tiny")
    checkpoint = work / f"sam_{args.sam_type}.pth"
    torch.manual_seed(0)
    torch.save(build_sam_architecture(args.sam_type).state_dict(), checkpoint)

    scenes = [make_scene(SynthConfig(n=args.n, seed=5, width=args.size, height=args.size), i) for i in range(args.n)]
    images = [np.asarray(s.image) for s in scenes]
    keywords = [tuple(sorted({o.kind for o in s.objects})) for s in scenes]
    boxes = [np.array([o.box for o in s.objects], dtype=np.float64) for s in scenes]
    requests = [RegionRequest(image=im, keywords=k) for im, k in zip(images, keywords, strict=True)]

    naive_sam = SamSegmenter(SamConfig(checkpoint=str(checkpoint), sam_type=args.sam_type, device=args.device,
                                       dtype="float32", batch_size=1, attention="eager"))
    device = naive_sam.device
    naive_det = ZeroShotDetector(GroundingConfig(model_path=str(grounding_path), device=args.device,
                                                 dtype="float32", batch_size=1, box_threshold=0.05))
    n = len(images)

    def per_s(seconds: float) -> float:
        return round(n / seconds, 3)

    def naive_encoder() -> None:
        for im in images:
            naive_sam.predictor.set_image(im)
        naive_sam.predictor.reset_image()

    def naive_stage() -> None:
        found = [naive_det.detect([im], [k])[0] for im, k in zip(images, keywords, strict=True)]
        b = [np.concatenate([f[kw].boxes for kw in f]) if f else np.zeros((0, 4)) for f in found]
        naive_sam.segment_one_at_a_time(images, b)

    with torch.inference_mode():
        baseline = {
            "grounding": per_s(timed(lambda: [naive_det.detect([im], [k]) for im, k in zip(images, keywords,
                                                                                            strict=True)],
                                     device, args.repeats)),
            "sam_encoder": per_s(timed(naive_encoder, device, args.repeats)),
            "sam_full": per_s(timed(lambda: naive_sam.segment_one_at_a_time(images, boxes), device, args.repeats)),
            "region_stage": per_s(timed(naive_stage, device, args.repeats)),
        }
    tflop = encoder_tflop_per_image(naive_sam, images[0])

    sweep = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        sam = SamSegmenter(SamConfig(checkpoint=str(checkpoint), sam_type=args.sam_type, device=args.device,
                                     batch_size=bs))
        det = ZeroShotDetector(GroundingConfig(model_path=str(grounding_path), device=args.device,
                                               batch_size=bs, box_threshold=0.05))
        provider = GroundedProvider(det, sam)
        batch = torch.stack([sam.preprocess(im)[0] for im in images[:bs]])
        prepared = [sam.preprocess(im) for im in images]
        embeddings = torch.cat([sam.embed(torch.stack([x for x, _ in prepared[i:i + bs]]))
                                for i in range(0, n, bs)])
        enc_s = timed(lambda batch=batch, sam=sam: sam.embed(batch), device, args.repeats) / len(batch)

        def decode(sam: SamSegmenter = sam, embeddings: torch.Tensor = embeddings,
                   prepared: list = prepared) -> None:
            for i, im in enumerate(images):
                sam.masks_for_boxes(embeddings[i:i + 1], im.shape[:2], prepared[i][1], boxes[i])

        row = {
            "batch_size": bs,
            "grounding": per_s(timed(lambda det=det: det.detect(images, keywords), device, args.repeats)),
            "sam_encoder": round(1 / enc_s, 3),
            "sam_decoder": per_s(timed(decode, device, args.repeats)),
            "sam_full": per_s(timed(lambda sam=sam: sam.segment(images, boxes), device, args.repeats)),
            "region_stage": per_s(timed(lambda provider=provider: provider.locate(requests), device, args.repeats)),
            "dtype": str(sam.dtype).removeprefix("torch."),
        }
        row["encoder_tflops_achieved"] = round(tflop * row["sam_encoder"], 3)
        if args.peak_tflops:
            row["encoder_utilisation"] = round(row["encoder_tflops_achieved"] / args.peak_tflops, 4)
        row["speedup_vs_naive"] = {k: round(row[k] / baseline[k], 3) for k in baseline}
        sweep.append(row)

    result = {
        "bench": "regions",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else (platform.processor() or "cpu"),
        "threads": torch.get_num_threads(),
        "sam_type": args.sam_type,
        "sam_weights": "random",
        "grounding_model": args.grounding,
        "images": n,
        "image_size": args.size,
        "encoder_tflop_per_image": round(tflop, 4),
        "naive": baseline,
        "batched": sweep,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
