"""What a run shows and takes (issue 12): progress on stderr, learning-rate schedule and clipping, report_to,
held-out evaluation, max_steps over every curriculum stage, s3:// locations on the command line, and a missing
model folder failing at once. A tiny random-weight LLaVA (the real architecture) on a 12-item generated dataset.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mfpo.models.tiny_llava import write_tiny_llava
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.embedded import run_generate
from mfpo.synth import SynthConfig, generate_scenes
from trainer.config import TrainConfig
from trainer.loop import train

FAST = {"learning_rate": 5e-3, "batch_size": 2, "epochs_per_stage": 5, "lora_r": 8, "disable_tqdm": True}
MFPO = str(Path(sys.executable).parent / "mfpo")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trainer-options")
    annotations = GenerateConfig.model_validate({"regions": {"mode": "annotations"}})
    items = generate_scenes(SynthConfig(n=12, seed=4, width=64, height=64), root / "items")
    run_generate(items, root / "dataset", annotations, workers=1, gallery=False)
    other = generate_scenes(SynthConfig(n=4, seed=9, width=64, height=64), root / "other-items")
    run_generate(other, root / "eval-dataset", annotations, workers=1, gallery=False)
    return {"dataset": root / "dataset", "eval": root / "eval-dataset", "model": write_tiny_llava(root / "llava"),
            "root": root}


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _run(assets, out: Path, **options) -> tuple[dict, list[dict], list[dict]]:
    """(summary, training lines, eval lines) of an in-process run."""
    eval_dataset = options.pop("eval_dataset", None)
    summary = train(TrainConfig(**{**FAST, **options}), str(assets["dataset"]), str(assets["model"]), out,
                    eval_dataset=eval_dataset)
    lines = _lines(out)
    return summary, [m for m in lines if "loss" in m], [m for m in lines if "eval/loss" in m]


def test_cli_trains_to_s3_with_progress_eval_and_a_config_from_s3(assets, tmp_path):
    """The chart's command line: --output s3://... (was a Path: `s3:/...`, a local folder) and --config from a
    bucket; stderr shows the plan, a progress bar with loss, reward accuracies and ETA, and eval results."""
    from support.s3_server import running_s3_server

    from mfpo.storage.s3 import S3Store

    with running_s3_server() as s3:
        configs = S3Store(s3.config("configs", create_bucket=True))
        configs.put("train.json", json.dumps({"learning_rate": 5e-3, "batch_size": 2, "epochs_per_stage": 5,
                                              "lr_scheduler": "linear", "warmup_steps": 1}).encode())
        env = {**os.environ, **s3.env(), "COLUMNS": "200"}
        started = time.monotonic()
        run = subprocess.run([MFPO, "train", "--dataset", str(assets["dataset"]), "--model", str(assets["model"]),
                              "--output", "s3://runs/cli", "--config", "s3://configs/train.json", "--max-steps", "4",
                              "--eval-fraction", "0.25", "--eval-steps", "2"],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert summary["output"] == "s3://runs/cli" and summary["stages"] == ["easy", "medium", "hard"]
        assert summary["eval"]["eval/items"] == 3 and summary["untrained_stages"] == []
        assert not (tmp_path / "s3:").exists() and not list(tmp_path.iterdir())  # nothing written locally
        store = S3Store(s3.config("runs", prefix="cli"))
        keys = set(store.list(""))
        assert {"metrics.jsonl", "summary.json", "final/adapter_config.json"} <= keys
        assert any(k.startswith("tb/events.out.tfevents") for k in keys)
        lines = [json.loads(line) for line in store.get("metrics.jsonl").decode().splitlines()]
    err = run.stderr
    assert "plan: 4 optimizer steps (max_steps=4 of 30 planned): easy 2 of 10, medium 1 of 10, hard 1 of 10" in err
    assert "dataset " in err and "12 items, 9 trained, 3 held out for eval" in err
    assert re.search(r"train: 100%.*4/4 \[\d\d:\d\d<00:00, .*stage=hard, loss=\d\.\d{4}, acc_text=\d\.\d\d, "
                     r"acc_image=\d\.\d\d, lr=", err), err[-2000:]
    assert re.search(r"train:\s+\d+%.*\d/4 \[\d\d:\d\d<\d\d:\d\d", err)  # the ETA, while it runs
    assert len(re.findall(r"eval @ step \d: loss \d\.\d{4}, text accuracy", err)) == 2
    assert [(m["step"], "eval/loss" in m) for m in lines] == [(1, False), (2, False), (2, True), (3, False),
                                                              (4, False), (4, True)]
    assert [m["lr"] for m in lines if "lr" in m] == pytest.approx([0.0, 5e-3, 5e-3 * 2 / 3, 5e-3 / 3])
    print(f"cli run: {time.monotonic() - started:.1f} s")


def test_a_missing_model_folder_fails_in_seconds_with_its_path(assets, tmp_path):
    """`--model models/llava` that is not there, no offline flag set: from_pretrained took 147 s here, retrying the
    Hub; the check answers at once, naming the folder it looked for."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    started = time.monotonic()
    run = subprocess.run([MFPO, "train", "--dataset", str(assets["dataset"]), "--model", "models/llava",
                          "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=env)
    elapsed = time.monotonic() - started
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"no folder {tmp_path}/models/llava" in run.stderr
    assert elapsed < 40, elapsed  # the interpreter and torch imports included (8 s of a normal CLI test)
    print(f"missing model: exit 2 after {elapsed:.1f} s")


def test_max_steps_below_one_pass_trains_every_stage(assets, caplog):
    summary, lines, _ = _run(assets, assets["root"] / "three", max_steps=3)
    assert summary["stages"] == ["easy", "medium", "hard"] and [m["stage"] for m in lines] == ["easy", "medium",
                                                                                                  "hard"]
    with caplog.at_level("INFO", logger="trainer"):
        summary, lines, _ = _run(assets, assets["root"] / "two", max_steps=2)
    assert [m["stage"] for m in lines] == ["easy", "medium"] and summary["untrained_stages"] == ["hard"]
    assert "max_steps=2 is fewer than the 3 curriculum stages: hard not trained" in caplog.text
    assert "plan: 2 optimizer steps (max_steps=2 of 30 planned): easy 1 of 10, medium 1 of 10, hard 0 of 10" \
        in caplog.text


def test_report_to_tensorboard_has_the_curves_and_none_writes_nothing(assets):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = assets["root"] / "tb-run"
    _run(assets, out, max_steps=3, eval_fraction=0.25, report_to="tensorboard")
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "lr", "grad_norm", "rewards/text_accuracy", "eval/loss", "eval/rewards/image_margin"} <= tags
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3] and [e.step for e in events.Scalars("eval/loss")] \
        == [3]
    quiet = assets["root"] / "no-tb"
    _run(assets, quiet, max_steps=2, report_to="none")
    assert len(_lines(quiet)) == 2 and not (quiet / "tb").exists()


def test_wandb_not_installed_fails_before_loading_anything(assets, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)
    started = time.monotonic()
    with pytest.raises(ValueError, match="report_to=wandb needs the wandb package"):
        train(TrainConfig(report_to="wandb"), str(assets["dataset"]), str(assets["model"]), tmp_path / "w")
    assert time.monotonic() - started < 1.0 and not (tmp_path / "w").exists()


def test_eval_of_the_untrained_policy_is_exact(assets):
    """Before any update the LoRA policy is the reference: every reward is 0, no margin is > 0, and each loss term
    is -log sigmoid(0) = log 2 (MFPO: text + image + margin; DPO: text)."""
    from trainer.data import load_examples
    from trainer.evaluate import evaluate
    from trainer.model import load_policy
    from trainer.reference import compute_reference

    model, processor = load_policy(str(assets["model"]), TrainConfig())
    model.train()  # as the loop holds it: evaluate switches to eval mode and back
    examples = load_examples(str(assets["eval"]), lambda t: len(t.split()), 512)
    ref = {r.id: r for r in compute_reference(model, processor, examples, batch_size=3)}
    for loss, terms in (("mfpo", 3), ("dpo", 1)):
        done: list[int] = []
        scores = evaluate(model, processor, examples, ref, TrainConfig(loss=loss, batch_size=3), "cpu",
                          progress=done.append)
        assert done == [3, 1] and scores["eval/items"] == 4 and model.training
        assert scores["eval/loss"] == pytest.approx(terms * math.log(2), abs=1e-5)
        for key in ("chosen", "rejected", "perturbed", "text_margin", "image_margin"):
            assert abs(scores[f"eval/rewards/{key}"]) < 1e-6, key
        assert scores["eval/rewards/text_accuracy"] == scores["eval/rewards/image_accuracy"] == 0.0


def test_eval_dataset_every_n_steps(assets, caplog):
    summary, lines, evals = _run(assets, assets["root"] / "eval-ds", max_steps=12, eval_steps=4,
                                 eval_dataset=str(assets["eval"]))
    assert [m["step"] for m in evals] == [4, 8, 12] and all(m["eval/items"] == 4 for m in evals)
    assert summary["eval"] == {k: v for k, v in evals[-1].items() if k != "step"}
    assert len(lines) == 12 and (assets["eval"] / "reference").is_dir()  # its reference pass is kept next to it
    assert len({m["eval/loss"] for m in evals}) == 3  # scored on the policy as it is at each evaluation
    with pytest.raises(ValueError, match="not both"):
        _run(assets, assets["root"] / "both", max_steps=1, eval_fraction=0.25, eval_dataset=str(assets["eval"]))
    # scored on the items it trains on, the eval follows the training: its loss falls and its text margin grows
    # (measured: 1.772, 1.767, 1.749, 1.720, 1.675 every 6 steps)
    with caplog.at_level("INFO", logger="trainer"):
        _, _, evals = _run(assets, assets["root"] / "eval-self", eval_steps=10, eval_dataset=str(assets["dataset"]))
    assert "the eval dataset shares 12 of its 12 items with the training data" in caplog.text
    assert [m["step"] for m in evals] == [10, 20, 30]
    assert evals[0]["eval/loss"] > evals[1]["eval/loss"] > evals[2]["eval/loss"]
    assert evals[0]["eval/rewards/text_margin"] < evals[2]["eval/rewards/text_margin"]


def test_gradient_clipping_bounds_the_update(assets):
    """A clip at 1e-12 makes the clipped gradient negligible next to AdamW's eps (1e-8): the adapters hardly move,
    so log pi/pi_ref at step 2 stays ~0; unclipped (0) it does not. grad_norm is the norm before clipping."""
    _, clipped, _ = _run(assets, assets["root"] / "clipped", max_steps=2, max_grad_norm=1e-12)
    _, free, _ = _run(assets, assets["root"] / "unclipped", max_steps=2, max_grad_norm=0.0)
    assert clipped[0]["grad_norm"] == pytest.approx(free[0]["grad_norm"]) and clipped[0]["grad_norm"] > 0.01
    assert clipped[1]["logratio/chosen_abs_max"] < 1e-3 < free[1]["logratio/chosen_abs_max"]


def test_eval_fraction_trains_only_the_rest(assets):
    summary, lines, evals = _run(assets, assets["root"] / "held", eval_fraction=0.25, curriculum="none",
                                 epochs_per_stage=1)
    assert summary["steps"] == len(lines) == 5  # 9 of the 12 items in batches of 2 (all 12: 6 steps)
    assert [m["step"] for m in evals] == [5] and evals[0]["eval/items"] == 3
    assert all(torch.isfinite(torch.tensor(v)) for v in evals[0].values())
