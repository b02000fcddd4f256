"""The training loop: reference pass, curriculum blocks, accelerate, metrics, checkpoints, exact resume.

Order of work (MFPO sec. 3.2-3.3): load and check the dataset -> reference pass (or reuse
it) -> rank items by the reference's entropy -> train the stages easy, medium, hard (or all
at once) with the chosen loss, one forward over the three sequences of each item per step.

The optimizer steps (:func:`plan_steps`: micro-batches grouped by ``gradient_accumulation_steps``
within one curriculum stage, a stage's shorter tail stepping on its own) are a pure function
of (seed, curriculum block), so a run restarted from a checkpoint (``accelerator.save_state``:
weights, optimizer, RNG) skips the steps it already did and continues with exactly the
batches, and metrics, of an uninterrupted run. The reference pass runs on the prepared model
under the same autocast as the policy, so log pi/pi_ref is 0 at step 0 in every precision.

Outputs in ``output_dir`` (a folder, or ``s3://bucket/prefix``: the run works in a local staging
folder mirrored to the bucket at every checkpoint and at the end, and a restarted run first
fetches what the bucket holds, so it resumes from there): ``metrics.jsonl`` (one line per
logging step: step, stage, micro_batches, loss, lr and every loss metric, means over the
step's micro-batches), ``tb/`` (TensorBoard),
``reference.jsonl``, ``checkpoints/step-N/``, and ``final/`` (the adapter or the full model,
with the processor).
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mfpo.storage.base import ObjectNotFound
from mfpo.storage.factory import open_store
from trainer.collate import collate
from trainer.config import TrainConfig
from trainer.curriculum import stage_plan
from trainer.data import Example, load_examples
from trainer.losses import NEEDS_PERTURBED, compute_loss
from trainer.model import forward_logps, load_policy
from trainer.reference import ReferenceRow, compute_reference, reference_key, rows_from_jsonl, rows_to_jsonl


@dataclass(frozen=True)
class MicroBatch:
    stage: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class OptimizerStep:
    """One optimizer step: up to ``gradient_accumulation_steps`` micro-batches of one stage."""

    stage: str
    micro_batches: tuple[MicroBatch, ...]


def plan_micro_batches(config: TrainConfig, ids: list[str], entropies: list[float]) -> list[MicroBatch]:
    """Every micro-batch of the run in order: curriculum blocks, each shuffled with a seed of its own."""
    out = []
    for block, (stage, block_ids) in enumerate(stage_plan(ids, entropies, config.curriculum,
                                                          config.epochs_per_stage)):
        order = list(block_ids)
        random.Random(config.seed * 1_000_003 + block).shuffle(order)
        out += [MicroBatch(stage, tuple(order[i : i + config.batch_size]))
                for i in range(0, len(order), config.batch_size)]
    return out


def plan_steps(config: TrainConfig, ids: list[str], entropies: list[float]) -> list[OptimizerStep]:
    """Every optimizer step of the run in order (MFPO sec. 3.3 easy -> medium -> hard).

    The micro-batches of :func:`plan_micro_batches` are grouped into steps of
    ``gradient_accumulation_steps``, never across a change of stage: a stage's last step
    takes the micro-batches left over (fewer than the accumulation), so every stage is
    trained and no step mixes two stages. With 12 items, batch 2 and accumulation 4 the
    stages (4 items = 2 micro-batches each) give 3 steps: easy, medium, hard.
    """
    steps: list[OptimizerStep] = []
    k = config.gradient_accumulation_steps
    micro = plan_micro_batches(config, ids, entropies)
    start = 0
    while start < len(micro):
        end = start
        while end < len(micro) and end - start < k and micro[end].stage == micro[start].stage:
            end += 1
        steps.append(OptimizerStep(micro[start].stage, tuple(micro[start:end])))
        start = end
    return steps


def reference_rows(model: Any, processor: Any, examples: list[Example], config: TrainConfig, model_path: str,
                   dataset_uri: str, accelerator: Any = None) -> list[ReferenceRow]:
    """Reuse ``reference/{key}.jsonl`` next to the dataset, or compute and store it there.

    ``model`` is the policy as ``accelerator.prepare`` returned it, and the pass runs under
    ``accelerator.autocast()``: the reference log-probs are computed in the same precision
    as the policy's (under bf16 an fp32 reference would make log pi/pi_ref 0.005-0.007 nats
    at step 0 instead of 0). The key includes the precision.
    """
    store = open_store(dataset_uri)
    key = f"reference/{reference_key(model_path, examples, config.mixed_precision)}.jsonl"
    try:
        return rows_from_jsonl(store.get(key))
    except ObjectNotFound:
        autocast = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
        with autocast:
            rows = compute_reference(model, processor, examples, config.batch_size)
        store.put(key, rows_to_jsonl(rows), "application/x-ndjson")
        return rows


def fetch_run(uri: str, local: Path) -> None:
    """Copy a run's objects from the store at ``uri`` into ``local`` (resume from an s3:// output)."""
    store = open_store(uri, create_bucket=True)
    for key in store.list(""):
        target = local / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(key))


def publish_run(local: Path, uri: str) -> None:
    """Mirror every file of the local run folder to the store at ``uri`` (same relative keys)."""
    store = open_store(uri, create_bucket=True)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            store.put(path.relative_to(local).as_posix(), path.read_bytes())


def _checkpoints(output: Path) -> list[Path]:
    return sorted((output / "checkpoints").glob("step-*"), key=lambda p: int(p.name.removeprefix("step-")))


def train(config: TrainConfig, dataset_uri: str, model_path: str, output_dir: str | Path,
          resume: bool = True) -> dict[str, Any]:
    """Run training; returns a summary (steps, stages visited, final metrics, output paths)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.tensorboard import SummaryWriter

    remote = str(output_dir) if str(output_dir).startswith("s3://") else None
    output = Path(tempfile.mkdtemp(prefix="mfpo-run-")) if remote else Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if remote and resume:
        fetch_run(remote, output)
    set_seed(config.seed)
    # Accumulation is planned here (plan_steps), not by accelerate: a step never spans two stages
    # and a stage's shorter tail still steps.
    accelerator = Accelerator(gradient_accumulation_steps=1, mixed_precision=config.mixed_precision)
    model, processor = load_policy(model_path, config)

    def count_tokens(text: str) -> int:
        return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    examples = load_examples(dataset_uri, count_tokens, config.max_answer_tokens)  # fails before any step
    by_id = {e.id: e for e in examples}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    # the reference pass runs on the prepared model, under the same autocast as the policy
    rows = reference_rows(model, processor, examples, config, model_path, dataset_uri, accelerator)
    (output / "reference.jsonl").write_bytes(rows_to_jsonl(rows))
    ref = {r.id: r for r in rows}
    steps = plan_steps(config, [e.id for e in examples], [ref[e.id].entropy for e in examples])
    if config.max_steps is not None:
        steps = steps[: config.max_steps]

    step, done_micro = 0, 0  # optimizer steps done; micro-batches done (kept in the checkpoint state)
    existing = _checkpoints(output) if resume else []
    if existing:
        accelerator.load_state(str(existing[-1]))
        state = json.loads((existing[-1] / "trainer_state.json").read_text())
        step, done_micro = state["step"], state["micro_batches"]
    metrics_path = output / "metrics.jsonl"
    if step == 0:
        metrics_path.write_text("")
    else:  # drop lines of steps after the checkpoint (a run killed between checkpoint and crash)
        kept = [line for line in metrics_path.read_text().splitlines() if json.loads(line)["step"] <= step]
        metrics_path.write_text("".join(line + "\n" for line in kept))
    writer = SummaryWriter(str(output / "tb"), purge_step=step + 1 if step else None)
    stages_seen: list[str] = []
    last: dict[str, Any] = {}
    perturbed = config.loss in NEEDS_PERTURBED  # text-only losses forward 2 sequences per item, not 3
    model.train()
    for planned in steps[step:]:
        n = len(planned.micro_batches)
        sums: dict[str, float] = {}
        worst_ratio = 0.0  # max |log pi(y_w) - log pi_ref(y_w)| of the step: 0 at step 1 (before any update)
        for k, micro in enumerate(planned.micro_batches):
            chunk = [by_id[i] for i in micro.ids]
            # DDP: all-reduce the gradients only on the step's last micro-batch
            sync = contextlib.nullcontext() if k == n - 1 else accelerator.no_sync(model)
            with sync:
                batch = {key: v.to(accelerator.device) for key, v in collate(processor, chunk, perturbed).items()}
                out = forward_logps(model, batch, parts=3 if perturbed else 2)
                logps = {
                    "policy_chosen_logps": out["chosen"],
                    "policy_rejected_logps": out["rejected"],
                    "policy_chosen_perturbed_logps": out.get("chosen_perturbed"),
                    **{f"ref_{key}_logps": torch.tensor([getattr(ref[i], f"ref_{key}_logps") for i in micro.ids],
                                                        device=accelerator.device)
                       for key in ("chosen", "rejected", "chosen_perturbed")},
                }
                options: dict[str, Any] = {"beta": config.beta}
                if config.loss == "mfpo":
                    options |= {"eta": config.eta, "weights": config.weights}
                elif config.loss == "mdpo":
                    options |= {"delta": config.eta}
                loss, metrics = compute_loss(config.loss, logps, **options)
                accelerator.backward(loss / n)  # the step's gradient: mean over its micro-batches
            for key, value in {"loss": float(loss.detach()), **metrics}.items():
                sums[key] = sums.get(key, 0.0) + value / n
            ratio = (logps["policy_chosen_logps"].detach().float() - logps["ref_chosen_logps"]).abs().max()
            worst_ratio = max(worst_ratio, float(ratio))
        optimizer.step()
        optimizer.zero_grad()
        done_micro += n
        step += 1
        if not stages_seen or stages_seen[-1] != planned.stage:
            stages_seen.append(planned.stage)
        last = {"step": step, "stage": planned.stage, "micro_batches": n, "loss": round(sums.pop("loss"), 8),
                "lr": optimizer.param_groups[0]["lr"], **{key: round(v, 8) for key, v in sums.items()},
                "logratio/chosen_abs_max": worst_ratio}
        if step % config.logging_steps == 0 and accelerator.is_main_process:
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(last) + "\n")
            for k, v in last.items():
                if isinstance(v, float):
                    writer.add_scalar(k, v, step)
        if config.save_steps and step % config.save_steps == 0:
            target = output / "checkpoints" / f"step-{step}"
            accelerator.save_state(str(target))
            (target / "trainer_state.json").write_text(json.dumps({"step": step, "micro_batches": done_micro}))
            if remote and accelerator.is_main_process:
                publish_run(output, remote)
    writer.close()
    accelerator.wait_for_everyone()
    final = output / "final"
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(str(final))
        processor.save_pretrained(str(final))
        if remote:
            publish_run(output, remote)
            shutil.rmtree(output, ignore_errors=True)
    where = remote or str(output)
    return {"steps": step, "stages": stages_seen, "last": last, "output": where, "final": f"{where}/final"}
