"""Pure parts of the trainer: answer log-probs, token entropy, the entropy curriculum."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.curriculum import entropy_stages, stage_plan
from trainer.logps import IGNORE_INDEX, mean_token_entropy, sequence_logps


def test_sequence_logps_shift_and_mask_by_hand():
    # vocab 2; logits at t predict token t+1. Position 0 is prompt (-100), answer tokens at 1 and 2.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]]])  # p = (1/2,1/2), (3/4,1/4), ...
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])
    # token 1 at t=1 from logits[0]: log 1/2; token 0 at t=2 from logits[1]: log 3/4
    assert sequence_logps(logits, labels).item() == pytest.approx(math.log(0.5) + math.log(0.75))
    assert sequence_logps(logits, torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 0]])).item() == pytest.approx(
        math.log(0.75))
    with pytest.raises(ValueError, match="disagree"):
        sequence_logps(logits, labels[:, :2])


def test_mean_token_entropy_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])
    h_uniform, h_34 = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert mean_token_entropy(logits, labels).item() == pytest.approx((h_uniform + h_34) / 2)
    none = torch.full((1, 3), IGNORE_INDEX)
    assert mean_token_entropy(logits, none).item() == 0.0


def test_entropy_tertiles_and_plan():
    ids = [f"i{k}" for k in range(7)]
    entropies = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.6]
    stages = entropy_stages(ids, entropies)
    assert stages == {"easy": ["i1", "i5", "i3"], "medium": ["i2", "i6"], "hard": ["i4", "i0"]}
    plan = stage_plan(ids, entropies, "easy-to-hard", epochs_per_stage=2)
    assert [s for s, _ in plan] == ["easy", "easy", "medium", "medium", "hard", "hard"]
    assert stage_plan(ids, entropies, "none", 1) == [("all", ids)]
    with pytest.raises(ValueError, match="valid: easy-to-hard, none"):
        stage_plan(ids, entropies, "hard-first", 1)  # type: ignore[arg-type]


def _steps(n_items, batch_size, accumulation, curriculum="easy-to-hard", epochs=1):
    from trainer.config import TrainConfig
    from trainer.loop import plan_micro_batches, plan_steps

    config = TrainConfig(batch_size=batch_size, gradient_accumulation_steps=accumulation, curriculum=curriculum,
                         epochs_per_stage=epochs)
    ids = [f"i{k:02d}" for k in range(n_items)]
    entropies = [k / n_items for k in range(n_items)]
    steps = plan_steps(config, ids, entropies)
    flat = [m for s in steps for m in s.micro_batches]
    assert flat == plan_micro_batches(config, ids, entropies)  # every micro-batch once, in order
    assert all(m.stage == s.stage for s in steps for m in s.micro_batches)  # a step never spans two stages
    return [(s.stage, len(s.micro_batches)) for s in steps]


@pytest.mark.parametrize(
    ("n_items", "batch_size", "accumulation", "curriculum", "epochs", "expected"),
    [
        # the audit's case: 4 items per stage = 2 micro-batches, fewer than the accumulation of 4
        (12, 2, 4, "easy-to-hard", 1, [("easy", 2), ("medium", 2), ("hard", 2)]),
        # tertiles 5 / 4 / 4 -> micro-batches 3 / 2 / 2 per epoch; two epochs; tails of 1 still step
        (13, 2, 3, "easy-to-hard", 2, [("easy", 3), ("easy", 3), ("medium", 3), ("medium", 1), ("hard", 3),
                                       ("hard", 1)]),
        (7, 3, 2, "easy-to-hard", 1, [("easy", 1), ("medium", 1), ("hard", 1)]),
        (12, 2, 4, "none", 1, [("all", 4), ("all", 2)]),
        (12, 2, 1, "easy-to-hard", 1, [("easy", 1)] * 2 + [("medium", 1)] * 2 + [("hard", 1)] * 2),
    ],
)
def test_optimizer_steps_for_awkward_sizes(n_items, batch_size, accumulation, curriculum, epochs, expected):
    assert _steps(n_items, batch_size, accumulation, curriculum, epochs) == expected


# -- max_steps spread over the curriculum stages (trainer.loop.spread_steps) ----------------------------------------


def _spread(n_items, batch_size, accumulation, epochs, max_steps, curriculum="easy-to-hard"):
    from trainer.config import TrainConfig
    from trainer.loop import plan_steps

    config = TrainConfig(batch_size=batch_size, gradient_accumulation_steps=accumulation, curriculum=curriculum,
                         epochs_per_stage=epochs)
    ids = [f"i{k:02d}" for k in range(n_items)]
    entropies = [k / n_items for k in range(n_items)]
    full = plan_steps(config, ids, entropies)
    cut = plan_steps(config.model_copy(update={"max_steps": max_steps}), ids, entropies)
    assert len(cut) == min(max_steps, len(full))
    for stage in {s.stage for s in cut}:  # each stage trains its own first steps, in order
        assert [s for s in cut if s.stage == stage] == [s for s in full if s.stage == stage][: len(
            [s for s in cut if s.stage == stage])]
    runs: list[list] = []
    for s in cut:
        if runs and runs[-1][0] == s.stage:
            runs[-1][1] += 1
        else:
            runs.append([s.stage, 1])
    return [tuple(r) for r in runs], full, cut


@pytest.mark.parametrize(
    ("n_items", "batch_size", "accumulation", "epochs", "max_steps", "curriculum", "expected"),
    [
        # 10 steps per stage (12 items, batch 2, 5 epochs); cutting after 12 used to train easy 10, medium 2
        (12, 2, 1, 5, 12, "easy-to-hard", [("easy", 4), ("medium", 4), ("hard", 4)]),
        (12, 2, 1, 5, 3, "easy-to-hard", [("easy", 1), ("medium", 1), ("hard", 1)]),
        (12, 2, 1, 5, 7, "easy-to-hard", [("easy", 3), ("medium", 2), ("hard", 2)]),
        (12, 2, 1, 5, 2, "easy-to-hard", [("easy", 1), ("medium", 1)]),  # fewer steps than stages: said aloud
        (12, 2, 1, 5, 1, "easy-to-hard", [("easy", 1)]),
        # 2 steps per stage (tails of 1 micro-batch): 4 steps give the easy stage both of its steps
        (13, 2, 3, 2, 4, "easy-to-hard", [("easy", 2), ("medium", 1), ("hard", 1)]),
        (12, 2, 1, 5, 99, "easy-to-hard", [("easy", 10), ("medium", 10), ("hard", 10)]),
        (12, 2, 1, 5, 7, "none", [("all", 7)]),  # one stage: the first steps
    ],
)
def test_max_steps_is_spread_over_the_stages(n_items, batch_size, accumulation, epochs, max_steps, curriculum,
                                             expected):
    assert _spread(n_items, batch_size, accumulation, epochs, max_steps, curriculum)[0] == expected


def test_the_plan_says_what_max_steps_leaves_untrained():
    from trainer.loop import describe_plan

    _, full, cut = _spread(12, 2, 1, 5, 2)
    line, untrained = describe_plan(full, cut, 2)
    assert untrained == ["hard"]
    assert line == "2 optimizer steps (max_steps=2 of 30 planned): easy 1 of 10, medium 1 of 10, hard 0 of 10"
    _, full, cut = _spread(12, 2, 1, 5, 99)
    assert describe_plan(full, cut, 99) == ("30 optimizer steps: easy 10, medium 10, hard 10", [])


@pytest.mark.parametrize(
    ("counts", "budget", "expected"),
    [
        ([10, 10, 10], 12, [4, 4, 4]),
        ([100, 1, 1], 3, [1, 1, 1]),  # the one-step minimum, taken from the big stage
        ([100, 1, 1], 50, [48, 1, 1]),
        ([5, 3, 2], 5, [3, 1, 1]),  # 2.5 / 1.5 / 1.0: the tie of remainders goes to the earlier stage
        ([10, 10, 10], 2, [1, 1, 0]),
        ([4, 4], 100, [4, 4]),
    ],
)
def test_stage_quotas(counts, budget, expected):
    from trainer.loop import stage_quotas

    assert stage_quotas(counts, budget) == expected
    assert sum(expected) == min(budget, sum(counts))


# -- learning-rate schedule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
@pytest.mark.parametrize(("warmup_ratio", "warmup_steps"), [(0.0, 0), (0.1, 0), (0.5, 3), (0.0, 40)])
def test_schedule_is_transformers_own(kind, warmup_ratio, warmup_steps):
    """The rate of every update equals that of transformers' scheduler (what TRL's trainers use)."""
    from transformers import get_scheduler

    from trainer.config import TrainConfig
    from trainer.schedule import learning_rate
    from trainer.schedule import warmup_steps as warmup_of

    total = 37
    config = TrainConfig(learning_rate=3e-4, lr_scheduler=kind, warmup_ratio=warmup_ratio,
                         warmup_steps=warmup_steps)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    name = "constant_with_warmup" if kind == "constant" else kind
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup_of(config, total), num_training_steps=total)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    ours = [learning_rate(config, k, total) for k in range(total)]
    assert ours == pytest.approx(expected, abs=1e-15)
    if 0 < warmup_of(config, total) < total:
        assert ours[0] == 0.0 and max(ours) == pytest.approx(3e-4)


def test_warmup_steps_override_the_ratio():
    from trainer.config import TrainConfig
    from trainer.schedule import warmup_steps

    assert warmup_steps(TrainConfig(warmup_ratio=0.1), 25) == 3  # ceil(2.5)
    assert warmup_steps(TrainConfig(warmup_ratio=0.1, warmup_steps=7), 25) == 7


# -- held-out split, output locations, trackers, the model check -------------------------------------------------------


def test_held_out_split_is_seeded_and_independent_of_line_order():
    from trainer.evaluate import split_held_out

    ids = [f"item-{k}" for k in range(12)]
    train, held = split_held_out(ids, 0.25, seed=3)
    assert len(held) == 3 and not set(train) & set(held) and set(train) | set(held) == set(ids)
    assert train == [i for i in ids if i in train]  # the given order is kept
    assert set(split_held_out(list(reversed(ids)), 0.25, seed=3)[1]) == set(held)
    assert set(split_held_out(ids, 0.25, seed=4)[1]) != set(held)
    assert split_held_out(ids, 0.01, seed=3)[1] and split_held_out(ids, 0.0, seed=3) == (ids, [])
    with pytest.raises(ValueError, match="none left to train"):
        split_held_out(ids[:1], 0.5, seed=0)


def test_output_locations_keep_s3_uris():
    from pathlib import Path

    from trainer.loop import output_location

    assert output_location("s3://runs/exp1") == (None, "s3://runs/exp1")
    assert output_location("file:///tmp/run") == (Path("/tmp/run"), None)
    assert output_location("run/") == (Path("run"), None)
    with pytest.raises(ValueError, match="no bucket"):  # what Path("s3://runs/exp1") makes of the URI
        output_location(Path("s3://runs/exp1"))
    with pytest.raises(ValueError, match="unsupported scheme 'gs'"):
        output_location("gs://runs/exp1")


def test_wandb_fails_clearly_when_not_installed(monkeypatch):
    import sys

    from trainer.config import TrainConfig
    from trainer.tracking import backends, check_report_to

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, installed or not
    for choice in ("wandb", "all"):
        with pytest.raises(ValueError, match=r"needs the wandb package.*pip install wandb.*tensorboard or none"):
            check_report_to(TrainConfig(report_to=choice))
    check_report_to(TrainConfig(report_to="tensorboard"))
    check_report_to(TrainConfig(report_to="none"))
    assert backends(TrainConfig(report_to="all")) == ("tensorboard", "wandb")
    assert backends(TrainConfig(report_to="none")) == ()


def test_a_missing_model_folder_fails_at_once_with_its_path(tmp_path, monkeypatch):
    import time

    from trainer.config import TrainConfig
    from trainer.model import ModelNotFound, load_policy, resolve_model

    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(ModelNotFound, match=f"model folder not found: {tmp_path}/llava$"):
        load_policy("llava/", TrainConfig())
    with pytest.raises(ModelNotFound, match=f"model folder not found: {tmp_path}/nowhere/llava-7b"):
        resolve_model(str(tmp_path / "nowhere" / "llava-7b"))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelNotFound, match="is a file, not a model folder"):
        resolve_model("weights.bin")
    # a name shaped like a Hub id (models/llava): offline, neither the folder nor the cache has it
    with pytest.raises(ModelNotFound, match=rf"no folder {tmp_path}/models/llava, and not in the Hugging Face "
                                            r"cache \(offline"):
        resolve_model("models/llava")
    assert time.monotonic() - started < 3.0
    (tmp_path / "models" / "llava").mkdir(parents=True)
    assert resolve_model("models/llava") == ("models/llava", True)


def test_a_hub_name_fails_at_once_when_the_hub_cannot_be_reached(tmp_path, monkeypatch):
    import huggingface_hub

    from trainer.model import ModelNotFound, resolve_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    asked: list[tuple[str, float]] = []

    def unreachable(name, timeout):
        asked.append((name, timeout))
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    with pytest.raises(ModelNotFound, match=rf"no folder {tmp_path}/org/llava, and the Hugging Face Hub cannot be "
                                            r"reached \(ConnectionError: Name or service not known\)"):
        resolve_model("org/llava")
    assert asked == [("org/llava", 10.0)]  # one request with a timeout, no retries


def test_loss_options_follow_the_loss():
    from trainer.config import TrainConfig

    assert TrainConfig(loss="mfpo", eta=0.5).loss_options() == {"beta": 0.1, "eta": 0.5, "weights": (1.0, 1.0, 1.0)}
    assert TrainConfig(loss="mdpo", eta=0.5).loss_options() == {"beta": 0.1, "delta": 0.5}
    assert TrainConfig(loss="dpo", beta=0.2).loss_options() == {"beta": 0.2}


def test_data_parallel_processes_share_each_micro_batch_without_repeating_it():
    """Under DDP each process trains its share of a micro-batch (before: all of it, N copies of the same data)."""
    from trainer.loop import shard_ids

    ids = tuple(f"i{k}" for k in range(7))
    for world in (1, 2, 3, 4, 7):
        shares = [shard_ids(ids, rank, world) for rank in range(world)]
        assert len({len(s) for s in shares}) == 1  # every process does the same number of items
        assert set().union(*map(set, shares)) == set(ids)  # together: the whole micro-batch
        if len(ids) % world == 0:
            assert sorted(sum(shares, ())) == sorted(ids)  # and nothing twice when it divides
    assert shard_ids(ids, 0, 1) == ids
    assert shard_ids(("a", "b"), 2, 4) == ("a",)  # fewer items than processes: topped up from the batch


def test_two_processes_train_the_same_plan_on_cpu(tmp_path):
    """A real data-parallel run (torchrun, 2 CPU processes, gloo: accelerate's MULTI_CPU, what `accelerate launch`
    runs on GPUs with nccl): it completes the same steps as one process would, every micro-batch split in two."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mfpo.models.tiny_llava import write_tiny_llava
    from mfpo.pipeline.config import GenerateConfig
    from mfpo.pipeline.embedded import run_generate
    from mfpo.synth import SynthConfig, generate_scenes

    items = generate_scenes(SynthConfig(n=8, seed=5, width=64, height=64), tmp_path / "items")
    run_generate(items, tmp_path / "ds", GenerateConfig.model_validate({"regions": {"mode": "annotations"}}),
                 workers=1, gallery=False)
    llava = write_tiny_llava(tmp_path / "llava")
    bindir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true"}
    run = subprocess.run([str(bindir / "python"), "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                          "trainer", "--dataset", str(tmp_path / "ds"), "--model", str(llava), "--output",
                          str(tmp_path / "run"), "--max-steps", "3"], capture_output=True, text=True, timeout=600,
                         env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "data parallel over 2 processes" in run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["stages"] == ["easy", "medium", "hard"]
