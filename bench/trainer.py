"""Benchmark of one training step per loss, in the same run on the same model and batch.

Measures step time (forward over the item's sequences + loss + backward + optimizer step,
with a precomputed reference, as the trainer runs) and answer+prompt tokens/s for
dpo (2 sequences per item), mfpo, mdpo and adavip (3 sequences per item), and the ratio of
each to dpo: the cost of the image term. Prints ONE JSON line.

CPU (default): the tiny random-weight LLaVA of ``mfpo models tiny-llava``, LoRA, fp32.
GPU: ``--model /models/llava-1.5-7b-hf --device cuda --bf16 --peak-tflops 989`` adds peak
memory and model FLOPs utilisation (6 * trainable-path parameters * tokens per step is not
used: FLOPs are counted by ``torch.utils.flop_counter`` on one step).

    python bench/trainer.py [--steps 10] [--batch-size 2] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from mfpo.models.tiny_llava import write_tiny_llava
from mfpo.synth import SynthConfig, make_scene
from trainer.collate import collate
from trainer.config import TrainConfig
from trainer.data import Example
from trainer.losses import NEEDS_PERTURBED, compute_loss
from trainer.model import forward_logps, load_policy

LOSSES = ("dpo", "mfpo", "mdpo", "adavip")


def examples(n: int, size: int) -> list[Example]:
    config = SynthConfig(n=n, seed=3, width=size, height=size)
    out = []
    for i in range(n):
        scene = make_scene(config, i)
        from PIL import Image

        image = Image.fromarray(scene.image)
        rejected = Image.fromarray(255 - scene.image)  # any other image: speed does not depend on it
        out.append(Example(scene.id, scene.question, scene.chosen, scene.rejected, image, rejected))
    return out


def step_fn(model, optimizer, batch, loss_name, device, bf16):  # type: ignore[no-untyped-def]
    parts = 3 if loss_name in NEEDS_PERTURBED else 2
    b = batch["input_ids"].shape[0] // parts
    ref = {f"ref_{k}_logps": torch.full((b,), -50.0, device=device)
           for k in ("chosen", "rejected", "chosen_perturbed")}

    def run() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward_logps(model, batch, parts=parts)
        logps = {"policy_chosen_logps": out["chosen"], "policy_rejected_logps": out["rejected"],
                 "policy_chosen_perturbed_logps": out.get("chosen_perturbed"), **ref}
        loss, _ = compute_loss(loss_name, logps, beta=0.1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="LLaVA folder (default: a fresh tiny LLaVA)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2, help="items per step")
    parser.add_argument("--size", type=int, default=336, help="image side of the synthetic items")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device bf16 peak, for MFU")
    args = parser.parse_args()
    device = torch.device(args.device)
    model_path = args.model or str(write_tiny_llava(Path(tempfile.mkdtemp()) / "llava"))
    model, processor = load_policy(model_path, TrainConfig(lora=True))
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    items = examples(args.batch_size, args.size)
    results = {}
    for name in LOSSES:
        perturbed = name in NEEDS_PERTURBED
        batch = {k: v.to(device) for k, v in collate(processor, items, perturbed).items()}
        tokens = int(batch["attention_mask"].sum())
        run = step_fn(model, optimizer, batch, name, device, args.bf16)
        run()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / args.steps
        row = {"sequences": int(batch["input_ids"].shape[0]), "tokens_per_step": tokens,
               "step_ms": round(seconds * 1000, 2), "tokens_per_s": round(tokens / seconds, 1)}
        if device.type == "cuda":
            row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if args.peak_tflops:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                run()
            row["mfu"] = round(counter.get_total_flops() / seconds / 1e12 / args.peak_tflops, 4)
        results[name] = row
    base = results["dpo"]["step_ms"]
    print(json.dumps({
        "bench": "trainer",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else (platform.processor() or "cpu"),
        "model": "tiny LLaVA (random)" if args.model is None else args.model,
        "batch_items": args.batch_size,
        "image_size": args.size,
        "dtype": "bf16" if args.bf16 else "fp32",
        "losses": results,
        "step_time_ratio_to_dpo": {k: round(v["step_ms"] / base, 3) for k, v in results.items()},
    }))


if __name__ == "__main__":
    main()
