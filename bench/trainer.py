"""Benchmark of one training step per loss, in the same run on the same model and batch.

Measures step time (forward over the item's sequences + loss + backward + optimizer step,
with a precomputed reference, as the trainer runs) and answer+prompt tokens/s for
dpo (2 sequences per item), mfpo, mdpo and adavip (3 sequences per item), and the ratio of
each to dpo: the cost of the image term. Prints ONE JSON line.

CPU (default): the tiny random-weight LLaVA of ``mfpo models tiny-llava``, LoRA, fp32.
GPU: ``--model /models/llava-1.5-7b-hf --device cuda --bf16 --peak-tflops 989`` adds peak
memory and model FLOPs utilisation (6 * trainable-path parameters * tokens per step is not
used: FLOPs are counted by ``torch.utils.flop_counter`` on one step).

Without weights: ``--shape llava-1.5-7b`` builds a ``LlavaForConditionalGeneration`` with the real
LLaVA-1.5-7B dimensions (:func:`llava_7b_config`: CLIP ViT-L/14-336 vision tower, 2-layer GELU
projector, Llama-2-7B language model, vocabulary 32064; 7.06 B parameters) with random weights made
directly in bf16 on ``--device``, and the tiny LLaVA's offline tokenizer with a 336 px CLIP image
processor (576 image tokens per image); vision tower frozen and LoRA added as ``trainer/model.py``'s
``load_policy`` does. ``--device meta`` only builds it and prints its parameter count (no step)::

    python bench/trainer.py --shape llava-1.5-7b --device cuda --steps 5 \
        --peak-tflops "$(python bench/device_peak.py)"
    python bench/trainer.py --shape llava-1.5-7b --device meta

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
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from mfpo.models.tiny_llava import CHAT_TEMPLATE, IMAGE_TOKEN, build_tiny_llava_tokenizer, write_tiny_llava
from mfpo.synth import SynthConfig, make_scene
from trainer.collate import collate
from trainer.config import TrainConfig
from trainer.data import Example
from trainer.losses import NEEDS_PERTURBED, compute_loss
from trainer.model import forward_logps, load_policy, prepare_policy

LOSSES = ("dpo", "mfpo", "mdpo", "adavip")
SHAPES = ("llava-1.5-7b",)

LLAVA_7B_IMAGE_SIZE = 336
LLAVA_7B_PATCH_SIZE = 14
LLAVA_7B_VOCAB = 32064


def llava_7b_config(image_token_index: int, pad_token_id: int | None) -> Any:
    """``LlavaConfig`` with the dimensions of ``llava-hf/llava-1.5-7b-hf``: CLIP ViT-L/14-336 (hidden 1024,
    24 layers, 16 heads, MLP 4096, quick-GELU), features from layer -2 without CLS (576 tokens per image),
    Linear-GELU-Linear projector, Llama-2-7B (hidden 4096, 32 layers, 32 heads, MLP 11008, 4096 positions,
    untied head) with the vocabulary of 32064."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=LLAVA_7B_IMAGE_SIZE, patch_size=LLAVA_7B_PATCH_SIZE, projection_dim=768, hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    text = LlamaConfig(
        vocab_size=LLAVA_7B_VOCAB, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
        pad_token_id=pad_token_id, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_index,
        image_seq_length=(LLAVA_7B_IMAGE_SIZE // LLAVA_7B_PATCH_SIZE) ** 2, projector_hidden_act="gelu",
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )


def build_shape(shape: str, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """(model, processor) of ``shape`` with random weights made on ``device`` in ``dtype`` (no CPU copy, no
    file): the tiny LLaVA's offline tokenizer (its ids all lie below the 32064 rows) and a 336 px CLIP processor."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = build_tiny_llava_tokenizer()
    config = llava_7b_config(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tokenizer.pad_token_id)
    side = LLAVA_7B_IMAGE_SIZE
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
        tokenizer=tokenizer, patch_size=LLAVA_7B_PATCH_SIZE, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in dtype, on device: no fp32 copy anywhere
    try:
        with device:
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    return model, processor


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
    parser.add_argument("--shape", default=None, choices=SHAPES,
                        help="random weights of this architecture, made in bf16 on --device (instead of --model)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2, help="items per step")
    parser.add_argument("--size", type=int, default=336, help="image side of the synthetic items")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device bf16 peak, for MFU")
    args = parser.parse_args()
    device = torch.device(args.device)
    train_config = TrainConfig(lora=True, gradient_checkpointing=args.gradient_checkpointing)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    if args.shape:
        if args.model:
            parser.error("give --model or --shape, not both")
        started = time.perf_counter()
        model, processor = build_shape(args.shape, device, torch.bfloat16)
        build_s = time.perf_counter() - started
        shape_info = {"shape": args.shape, "parameters": sum(p.numel() for p in model.parameters()),
                      "build_s": round(build_s, 2)}
        if device.type == "meta":  # the architecture only: count, no step
            print(json.dumps({"bench": "trainer", "device": "meta", "model": f"{args.shape} (meta, no weights)",
                              **shape_info}))
            return
        model = prepare_policy(model, train_config)
        shape_info["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        args.bf16 = True
    else:
        model_path = args.model or str(write_tiny_llava(Path(tempfile.mkdtemp()) / "llava"))
        model, processor = load_policy(model_path, train_config)
        shape_info = {}
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
            row["tflop_per_step"] = round(counter.get_total_flops() / 1e12, 3)
            row["tflops_achieved"] = round(row["tflop_per_step"] / seconds, 1)
            row["mfu"] = round(counter.get_total_flops() / seconds / 1e12 / args.peak_tflops, 4)
        results[name] = row
    base = results["dpo"]["step_ms"]
    print(json.dumps({
        "bench": "trainer",
        "device": device_name,
        "model": (f"{args.shape} (random, bf16)" if args.shape else
                  "tiny LLaVA (random)" if args.model is None else args.model),
        **shape_info,
        "lora": True,
        "gradient_checkpointing": args.gradient_checkpointing,
        "peak_tflops": args.peak_tflops or None,
        "batch_items": args.batch_size,
        "image_size": args.size,
        "dtype": "bf16" if args.bf16 else "fp32",
        "losses": results,
        "step_time_ratio_to_dpo": {k: round(v["step_ms"] / base, 3) for k, v in results.items()},
    }))


if __name__ == "__main__":
    main()
