"""Sizing of the testbed's base model (issue 16, point 2): world -> SFT -> base metrics, no preference runs.

Trains one base model with ``configs/testbed.json`` updated by ``--set`` (a JSON object of per-section
overrides, e.g. ``'{"model": {"patch_size": 16}, "sft": {"epochs": 2}}'``) and prints ONE JSON line: its
caption recall, CHAIR_i and prior hallucination on the held-out scenes, POPE, colour / count accuracy, the
probe, and the time of each step. It reads only the world's SFT / held-out data and the base model, so
sizing never looks at a method comparison. Worlds are cached under ``--cache`` by their configuration.

    python bench/testbed_base.py --set '{"sft": {"epochs": 1.0}}' --out /tmp/size/runs/x
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from mfpo.testbed.config import TestbedConfig
from mfpo.testbed.evaluate import EvalSet, evaluate_model
from mfpo.testbed.experiment import build_probe_dataset, build_world
from mfpo.testbed.model import write_testbed_llava
from mfpo.testbed.world import world_words
from trainer.sft import read_sft_rows, sft_train


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "testbed.json")
    parser.add_argument("--set", default="{}", help="JSON object: section -> fields to override.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="Folder of this base model.")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/testbed-worlds"), help="World cache.")
    args = parser.parse_args()
    data = json.loads(args.config.read_text())
    overrides = json.loads(args.set)
    for section, fields in overrides.items():
        data[section].update(fields)
    config = TestbedConfig.model_validate(data)
    torch.set_num_threads(config.threads)

    started = time.perf_counter()
    world_key = hashlib.sha256(config.world.model_dump_json().encode()).hexdigest()[:12]
    world_dir = args.cache / world_key
    world = build_world(config, world_dir, _log)
    probe = build_probe_dataset(config, world, world_dir, _log)
    world_s = time.perf_counter() - started

    init = write_testbed_llava(args.out / "init", config.model, world_words(config.world), seed=args.seed)
    rows, images = read_sft_rows(world["sft"])
    summary = sft_train(config.sft.model_copy(update={"seed": args.seed}), rows, images, str(init), args.out / "sft")
    t = time.perf_counter()
    evalset = EvalSet.build(config.world, config.eval, probe)
    metrics, _ = evaluate_model(str(args.out / "sft" / "final"), evalset, config.eval)
    eval_s = time.perf_counter() - t
    pope = metrics["pope"]
    print(json.dumps({
        "bench": "testbed-base", "set": overrides, "seed": args.seed, "world_s": round(world_s, 1),
        "vision_s": summary["vision_seconds"], "sft_s": summary["seconds"], "eval_s": round(eval_s, 1),
        "steps": summary["steps"], "loss": [summary["first_loss"], summary["last_loss"]],
        "captions": {k: round(v, 2) for k, v in metrics["captions"].items()},
        "pope": {s: {k: round(pope[s][k], 2) for k in ("accuracy", "f1", "yes_ratio")} for s in pope},
        "answers": {k: round(v, 2) for k, v in metrics["answers"].items()},
        "probe": {k: metrics["probe"][k] for k in ("prefers_chosen", "prefers_chosen_noise")},
        "examples": metrics["examples"][:3],
    }))


if __name__ == "__main__":
    main()
