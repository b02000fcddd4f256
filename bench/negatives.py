"""Benchmark of the rejected-image constructors, each beside MFPO's noise in the same run.

Every constructor runs through :func:`mfpo.negatives.construct_negatives` (the entry point of the stage
graph) on the same synthetic scenes (``mfpo.synth``: image, object boxes as the keyword regions,
question, chosen answer), after one warm-up call that also loads its models; prints ONE JSON line with
images/s per constructor and its ratio to MFPO's noise (``vs_mfpo``: < 1 is slower).

CPU (default): the tiny random-weight CLIP, SD inpainting (``mfpo models tiny``) and LLaVA-1.5
(``mfpo models tiny-llava``). On a GPU, point ``--clip``, ``--inpainting`` and ``--llava`` at folders
of the real architectures (random weights are enough for speed) and pass ``--device cuda``::

    python bench/negatives.py --n 32 --size 512 --device cuda --clip CLIP_L14 --inpainting SD15_INPAINT \
        --llava LLAVA15_7B --steps 10 --inpaint-steps 25 | tee -a bench/results/negatives.jsonl

CPU::

    python bench/negatives.py --n 8 --size 256
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

import torch

from mfpo.negatives import (
    AdavipConfig,
    ClipScoreConfig,
    DiffusersInpaintConfig,
    MbpoConfig,
    NegativeRequest,
    NegativesConfig,
    construct_negatives,
)
from mfpo.perturbation import PerturbationConfig
from mfpo.regions.base import Region
from mfpo.regions.masks import box_to_mask
from mfpo.synth import SynthConfig, make_scene


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Seconds per call of ``fn`` after one warm-up call (which loads the models), synchronizing CUDA."""
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def scene_requests(n: int, size: int) -> list[NegativeRequest]:
    """Synthetic items as the stage graph hands them to the constructors: the objects' boxes as keyword regions."""
    config = SynthConfig(n=n, seed=3, width=size, height=size)
    out = []
    for i in range(n):
        scene = make_scene(config, i)
        regions = tuple(Region(mask=box_to_mask(o.box, size, size), source="annotations", keyword=o.kind)
                        for o in scene.objects)
        out.append(NegativeRequest(image=scene.image, seed=1000 + i, regions=regions,
                                   keywords=tuple(o.kind for o in scene.objects), question=scene.question,
                                   chosen=scene.chosen, id=scene.id))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="images (items)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (the models' device)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per constructor (after a warm-up)")
    parser.add_argument("--clip", help="CLIP folder (default: the tiny one)")
    parser.add_argument("--inpainting", help="diffusers inpainting folder (default: the tiny SD inpainting)")
    parser.add_argument("--llava", help="LLaVA-1.5 folder (default: the tiny one)")
    parser.add_argument("--steps", type=int, default=10, help="MBPO PGD steps")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="MBPO answer length")
    parser.add_argument("--inpaint-steps", type=int, default=25, help="diffusers denoising steps")
    parser.add_argument("--batch-size", type=int, default=8, help="model batch (CLIP, inpainting, MBPO)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mfpo-bench-negatives-"))
    made: dict[str, Path] = {}
    if not (args.clip and args.inpainting):
        from mfpo.models.tiny import write_tiny_negative_models

        made |= write_tiny_negative_models(work)
    if not args.llava:
        from mfpo.models.tiny_llava import write_tiny_llava

        made["llava"] = write_tiny_llava(work / "llava")
    clip = args.clip or str(made["clip"])
    inpainting = args.inpainting or str(made["inpainting"])
    llava = args.llava or str(made["llava"])

    requests = scene_requests(args.n, args.size)
    noise = PerturbationConfig()
    clip_cfg = ClipScoreConfig(model_path=clip, device=args.device, batch_size=args.batch_size)
    diffusers = DiffusersInpaintConfig(model_path=inpainting, device=args.device, batch_size=args.batch_size,
                                       num_inference_steps=args.inpaint_steps)
    mbpo = MbpoConfig(model_path=llava, device=args.device, steps=args.steps, max_new_tokens=args.max_new_tokens,
                      batch_size=args.batch_size)
    runs: dict[str, tuple[str, NegativesConfig]] = {
        "mfpo": ("mfpo", NegativesConfig()),
        "global": ("global", NegativesConfig(kinds=["global"])),
        "mdpo": ("mdpo", NegativesConfig(kinds=["mdpo"])),
        "adavip_fill": ("adavip", NegativesConfig(kinds=["adavip"], adavip=AdavipConfig(clip=clip_cfg))),
        "adavip_diffusers": ("adavip", NegativesConfig(kinds=["adavip"], adavip=AdavipConfig(
            clip=clip_cfg, inpainter="diffusers", diffusers=diffusers))),
        "mbpo_features": ("mbpo", NegativesConfig(kinds=["mbpo"], mbpo=mbpo)),
        "mbpo_answer": ("mbpo", NegativesConfig(kinds=["mbpo"], mbpo=mbpo.model_copy(update={"objective": "answer"}))),
    }
    rates: dict[str, float] = {}
    candidates: dict[str, float] = {}
    for name, (kind, config) in runs.items():
        out: list[Any] = []

        def run(kind: Any = kind, config: NegativesConfig = config, out: list[Any] = out) -> None:
            out[:] = construct_negatives(kind, requests, config, noise)

        rates[name] = round(len(requests) / timed(run, args.repeats), 3)
        if kind == "adavip":
            candidates[name] = round(sum(len(r.details["candidates"]) for r in out) / len(out), 2)

    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    result = {
        "bench": "negatives",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else (platform.processor() or "cpu"),
        "threads": torch.get_num_threads(),
        "models": {"clip": "tiny" if not args.clip else clip, "inpainting": "tiny" if not args.inpainting
                   else inpainting, "llava": "tiny" if not args.llava else llava, "weights": "random"},
        "images": len(requests),
        "image_size": args.size,
        "batch_size": args.batch_size,
        "mbpo_steps": args.steps,
        "mbpo_max_new_tokens": args.max_new_tokens,
        "inpaint_steps": args.inpaint_steps,
        "adavip_candidates_per_image": candidates,
        "images_per_s": rates,
        "vs_mfpo": {k: round(v / rates["mfpo"], 4) for k, v in rates.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
