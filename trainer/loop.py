"""The training loop: reference pass, curriculum blocks, accelerate, metrics, checkpoints, exact resume.

Order of work (MFPO sec. 3.2-3.3): check the inputs (dataset, model folder, trackers) ->
load and check the dataset -> reference pass (or reuse it) -> hold out the eval items ->
rank the training items by the reference's entropy -> train the stages easy, medium, hard
(or all at once) with the chosen loss, one forward over the three sequences of each item
per micro-batch.

The optimizer steps (:func:`plan_steps`: micro-batches grouped by ``gradient_accumulation_steps``
within one curriculum stage, a stage's shorter tail stepping on its own; ``max_steps`` spread
over the stages by :func:`spread_steps`) are a pure function of (seed, curriculum block,
settings), and so is each step's learning rate (:mod:`trainer.schedule`: warmup, then linear,
cosine or constant), so a run restarted from a checkpoint (``accelerator.save_state``: weights,
optimizer, RNG) skips the steps it already did and continues with exactly the batches, rates
and metrics of an uninterrupted run. Gradients are clipped to ``max_grad_norm`` before each
step. The reference pass runs on the prepared model under the same autocast as the policy,
so log pi/pi_ref is 0 at step 0 in every precision.

Progress: tqdm bars on stderr (reference pass, training with stage, loss, reward accuracies,
learning rate and ETA, evaluation) and the ``trainer`` logger (plan, stages left untrained,
eval results, checkpoints). Metrics go to ``metrics.jsonl`` and to ``report_to``'s trackers
(:mod:`trainer.tracking`); the held-out items (:mod:`trainer.evaluate`) are scored every
``eval_steps`` and after the last step.

Outputs in ``output_dir`` (a folder, or ``s3://bucket/prefix``: the run works in a local staging
folder mirrored to the bucket at every checkpoint and at the end, and a restarted run first
fetches what the bucket holds, so it resumes from there): ``metrics.jsonl`` (one line per
logging step: step, stage, micro_batches, loss, lr, grad_norm and every loss metric, means
over the step's micro-batches; and one line per evaluation: step and the ``eval/*`` metrics),
``tb/`` (TensorBoard, with ``report_to`` tensorboard or all), ``reference.jsonl``,
``checkpoints/step-N/``, and ``final/`` (the adapter or the full model, with the processor).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import torch

from mfpo.storage.base import ObjectNotFound
from mfpo.storage.factory import open_store
from trainer.collate import collate
from trainer.config import TrainConfig
from trainer.curriculum import stage_plan
from trainer.data import Example, load_examples, require_dataset
from trainer.evaluate import evaluate, split_held_out
from trainer.losses import NEEDS_PERTURBED, compute_loss
from trainer.model import forward_logps, load_policy
from trainer.reference import ReferenceRow, compute_reference, reference_key, rows_from_jsonl, rows_to_jsonl
from trainer.schedule import learning_rate
from trainer.tracking import check_report_to, open_trackers

logger = logging.getLogger(__name__)


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


def _group_steps(config: TrainConfig, micro: list[MicroBatch]) -> list[OptimizerStep]:
    steps: list[OptimizerStep] = []
    k = config.gradient_accumulation_steps
    start = 0
    while start < len(micro):
        end = start
        while end < len(micro) and end - start < k and micro[end].stage == micro[start].stage:
            end += 1
        steps.append(OptimizerStep(micro[start].stage, tuple(micro[start:end])))
        start = end
    return steps


def plan_steps(config: TrainConfig, ids: list[str], entropies: list[float]) -> list[OptimizerStep]:
    """Every optimizer step of the run in order (MFPO sec. 3.3 easy -> medium -> hard).

    The micro-batches of :func:`plan_micro_batches` are grouped into steps of
    ``gradient_accumulation_steps``, never across a change of stage: a stage's last step
    takes the micro-batches left over (fewer than the accumulation), so every stage is
    trained and no step mixes two stages. With 12 items, batch 2 and accumulation 4 the
    stages (4 items = 2 micro-batches each) give 3 steps: easy, medium, hard.

    ``max_steps`` below the plan's length is spread over the stages (:func:`spread_steps`)
    rather than cutting the plan after the first stage.
    """
    steps = _group_steps(config, plan_micro_batches(config, ids, entropies))
    return spread_steps(steps, config.max_steps)


def shard_ids(ids: tuple[str, ...], rank: int, world: int) -> tuple[str, ...]:
    """This process's share of a micro-batch under data parallelism: items ``rank, rank + world, ...``,
    topped up from the micro-batch's own items so every process gets the same count (>= 1).

    The plan is the same for any number of processes (a micro-batch is ``batch_size`` items in all), so a run on
    N GPUs takes the same optimizer steps as on one, each micro-batch split N ways; before this, every process
    trained the whole micro-batch - N copies of the same data.
    """
    if world <= 1:
        return ids
    size = -(-len(ids) // world)
    mine = list(ids[rank::world])
    top_up = [ids[(rank + k * world) % len(ids)] for k in range(len(mine), size)]
    return tuple(mine + top_up)


def stage_counts(steps: list[OptimizerStep]) -> dict[str, int]:
    """Optimizer steps per stage, in the order the stages are trained."""
    counts: dict[str, int] = {}
    for s in steps:
        counts[s.stage] = counts.get(s.stage, 0) + 1
    return counts


def stage_quotas(counts: list[int], budget: int) -> list[int]:
    """Split ``budget`` steps over stages of ``counts`` steps, in proportion (largest remainder).

    Every stage gets at least one step when ``budget`` >= the number of stages, and none gets
    more than it has; ties go to the earlier stage, so with fewer steps than stages the first
    stages are the ones trained.
    """
    total = sum(counts)
    if budget >= total:
        return list(counts)
    exact = [budget * n / total for n in counts]
    floor = 1 if budget >= len(counts) else 0
    quota = [min(n, max(floor, math.floor(e))) for n, e in zip(counts, exact, strict=True)]
    while sum(quota) > budget:  # the one-step minimum overshot: take from the most over-served stage
        k = max((i for i in range(len(counts)) if quota[i] > 1), key=lambda i: (quota[i] - exact[i], i))
        quota[k] -= 1
    while sum(quota) < budget:
        k = max((i for i in range(len(counts)) if quota[i] < counts[i]), key=lambda i: (exact[i] - quota[i], -i))
        quota[k] += 1
    return quota


def spread_steps(steps: list[OptimizerStep], max_steps: int | None) -> list[OptimizerStep]:
    """At most ``max_steps`` of ``steps``: each stage's first steps, as many as :func:`stage_quotas` gives it.

    The order (easy -> medium -> hard) is kept. 30 planned steps (10 per stage) and
    ``max_steps=12`` train 4 easy, 4 medium, 4 hard; ``max_steps=2`` trains easy and medium
    (the caller says that hard is not trained).
    """
    if max_steps is None or max_steps >= len(steps):
        return steps
    counts = stage_counts(steps)
    left = dict(zip(counts, stage_quotas(list(counts.values()), max_steps), strict=True))
    out = []
    for s in steps:
        if left[s.stage] > 0:
            out.append(s)
            left[s.stage] -= 1
    return out


def describe_plan(full: list[OptimizerStep], steps: list[OptimizerStep],
                  max_steps: int | None) -> tuple[str, list[str]]:
    """(one line saying how many steps each stage trains, the stages ``max_steps`` leaves untrained)."""
    planned, chosen = stage_counts(full), stage_counts(steps)
    per_stage = ", ".join(f"{stage} {chosen.get(stage, 0)}" + (f" of {n}" if chosen.get(stage, 0) != n else "")
                          for stage, n in planned.items())
    cut = f" (max_steps={max_steps} of {len(full)} planned)" if len(steps) < len(full) else ""
    return f"{len(steps)} optimizer steps{cut}: {per_stage}", [s for s in planned if s not in chosen]


def plan_fingerprint(steps: list[OptimizerStep]) -> str:
    """A short hash of the step plan: a resumed run warns when its plan is not its checkpoint's."""
    text = json.dumps([[s.stage, [list(m.ids) for m in s.micro_batches]] for s in steps])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reference_rows(model: Any, processor: Any, examples: list[Example], config: TrainConfig, model_path: str,
                   dataset_uri: str, accelerator: Any = None) -> list[ReferenceRow]:
    """Reuse ``reference/{key}.jsonl`` next to the dataset, or compute and store it there.

    ``model`` is the policy as ``accelerator.prepare`` returned it, and the pass runs under
    ``accelerator.autocast()``: the reference log-probs are computed in the same precision
    as the policy's (under bf16 an fp32 reference would make log pi/pi_ref 0.005-0.007 nats
    at step 0 instead of 0). The key includes the precision. A pass that runs shows a progress
    bar on the main process (unless ``disable_tqdm``).
    """
    from tqdm import tqdm

    store = open_store(dataset_uri)
    key = f"reference/{reference_key(model_path, examples, config.mixed_precision)}.jsonl"
    try:
        rows = rows_from_jsonl(store.get(key))
        logger.info("reference pass: reused %s/%s (%d items)", dataset_uri.rstrip("/"), key, len(rows))
        return rows
    except ObjectNotFound:
        autocast = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
        shown = not config.disable_tqdm and (accelerator is None or accelerator.is_main_process)
        with autocast, tqdm(total=len(examples), desc=f"reference pass {dataset_uri}", unit="item", file=sys.stderr,
                            dynamic_ncols=True, disable=not shown) as progress:
            rows = compute_reference(model, processor, examples, config.batch_size, progress=progress.update)
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


def output_location(output_dir: str | Path) -> tuple[Path | None, str | None]:
    """(local folder, None) for a folder or ``file://`` URI; (None, uri) for ``s3://bucket/prefix``.

    Anything else with a scheme is refused rather than becoming a local folder: ``Path`` turns
    ``s3://b/p`` into ``s3:/b/p``, which would have trained into a folder named ``s3:``.
    """
    text = str(output_dir)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"output {text!r} has no bucket; use s3://bucket/prefix (was it passed through Path?)")
        return None, text
    if scheme == "file":
        return Path(url2pathname(parts.path)), None
    if len(scheme) > 1:
        raise ValueError(f"output {text!r}: unsupported scheme {scheme!r}; use a folder, file:///path or "
                         "s3://bucket/prefix")
    return Path(text).expanduser(), None


def _checkpoints(output: Path) -> list[Path]:
    return sorted((output / "checkpoints").glob("step-*"), key=lambda p: int(p.name.removeprefix("step-")))


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 8) if isinstance(v, float) else v for k, v in metrics.items()}


def _quiet(*args: Any, **kwargs: Any) -> None:
    """The logger of processes other than the main one."""


def train(config: TrainConfig, dataset_uri: str, model_path: str, output_dir: str | Path,
          resume: bool = True, eval_dataset: str | None = None) -> dict[str, Any]:
    """Run training; returns a summary (steps, stages visited, untrained stages, final metrics, eval metrics,
    output paths).

    ``eval_dataset`` (a dataset folder or URI) is scored every ``eval_steps``, like the held-out
    split of ``eval_fraction`` (give one of them). Progress goes to stderr (tqdm bars, unless
    ``disable_tqdm``) and to the ``trainer`` logger; nothing is printed on stdout.
    """
    if eval_dataset and config.eval_fraction > 0:
        raise ValueError("give eval_fraction or an eval dataset, not both")
    check_report_to(config)  # before anything slow: a tracker that is not installed fails now
    for uri in (dataset_uri, eval_dataset):
        if uri:
            require_dataset(uri, config.negatives_kind)  # the loss's rejected images are there, before loading
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    local_dir, remote = output_location(output_dir)
    output = local_dir or Path(tempfile.mkdtemp(prefix="mfpo-run-"))
    output.mkdir(parents=True, exist_ok=True)
    if remote and resume:
        fetch_run(remote, output)
    set_seed(config.seed)
    # Accumulation is planned here (plan_steps), not by accelerate: a step never spans two stages
    # and a stage's shorter tail still steps.
    accelerator = Accelerator(gradient_accumulation_steps=1, mixed_precision=config.mixed_precision)
    main = accelerator.is_main_process
    info = logger.info if main else _quiet
    warn = logger.warning if main else _quiet

    def bar(**options: Any) -> Any:
        return tqdm(file=sys.stderr, dynamic_ncols=True, disable=config.disable_tqdm or not main, **options)

    info("loading model %s", model_path)
    model, processor = load_policy(model_path, config)  # a missing model folder fails here, before any loading

    def count_tokens(text: str) -> int:
        return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    kind = config.negatives_kind
    info("rejected images: %s", kind or "the records' rejected_image (text-only loss)")
    examples = load_examples(dataset_uri, count_tokens, config.max_answer_tokens,  # fails before any step
                             negatives=kind)
    extra = load_examples(eval_dataset, count_tokens, config.max_answer_tokens, negatives=kind) if eval_dataset \
        else []
    by_id = {e.id: e for e in examples}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    # the reference pass runs on the prepared model, under the same autocast as the policy
    rows = reference_rows(model, processor, examples, config, model_path, dataset_uri, accelerator)
    (output / "reference.jsonl").write_bytes(rows_to_jsonl(rows))
    ref = {r.id: r for r in rows}
    train_ids, held_ids = split_held_out([e.id for e in examples], config.eval_fraction, config.seed)
    held, held_ref = [by_id[i] for i in held_ids], ref
    if eval_dataset:
        extra_rows = reference_rows(model, processor, extra, config, model_path, eval_dataset, accelerator)
        held, held_ref = extra, {r.id: r for r in extra_rows}
        shared = len(set(train_ids) & set(held_ref))
        if shared:
            warn("the eval dataset shares %d of its %d items with the training data", shared, len(held))
    info("dataset %s: %d items, %d trained%s", dataset_uri, len(examples), len(train_ids),
         f", {len(held)} held out for eval" if held else "")
    full = plan_steps(config.model_copy(update={"max_steps": None}), train_ids, [ref[i].entropy for i in train_ids])
    steps = spread_steps(full, config.max_steps)
    plan_line, untrained = describe_plan(full, steps, config.max_steps)
    info("plan: %s", plan_line)
    if untrained:
        warn("max_steps=%s is fewer than the %d curriculum stages: %s not trained", config.max_steps,
             len(stage_counts(full)), ", ".join(untrained))
    fingerprint = plan_fingerprint(steps)
    if accelerator.num_processes > 1:
        info("data parallel over %d processes: each micro-batch of %d items is split between them",
             accelerator.num_processes, config.batch_size)
    if accelerator.num_processes > config.batch_size:
        warn("batch_size=%d is below the %d processes: each micro-batch's items are repeated to fill them; raise "
             "batch_size to at least the number of processes", config.batch_size, accelerator.num_processes)

    step, done_micro = 0, 0  # optimizer steps done; micro-batches done (kept in the checkpoint state)
    existing = _checkpoints(output) if resume else []
    if existing:
        accelerator.load_state(str(existing[-1]))
        state = json.loads((existing[-1] / "trainer_state.json").read_text())
        step, done_micro = state["step"], state["micro_batches"]
        info("resumed from %s", existing[-1].name)
        if state.get("plan", fingerprint) != fingerprint:
            warn("the checkpoint was made under another step plan (max_steps, batch or curriculum settings "
                 "changed): continuing at step %d of the new plan", step + 1)
    metrics_path = output / "metrics.jsonl"
    if step == 0:
        metrics_path.write_text("")
    else:  # drop lines of steps after the checkpoint (a run killed between checkpoint and crash)
        kept = [line for line in metrics_path.read_text().splitlines() if json.loads(line)["step"] <= step]
        metrics_path.write_text("".join(line + "\n" for line in kept))
    trackers = open_trackers(config, remote or str(output), output, step, main)

    def record(line: dict[str, Any]) -> None:
        if main:
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(line) + "\n")
        trackers.log(line, line["step"])

    stages_seen: list[str] = []
    last: dict[str, Any] = {}
    scores: dict[str, Any] = {}
    total = len(steps)
    perturbed = config.loss in NEEDS_PERTURBED  # text-only losses forward 2 sequences per item, not 3
    model.train()
    progress = bar(total=total, initial=step, desc="train", unit="step")
    for planned in steps[step:]:
        n = len(planned.micro_batches)
        lr = learning_rate(config, step, total)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sums: dict[str, float] = {}
        worst_ratio = 0.0  # max |log pi(y_w) - log pi_ref(y_w)| of the step: 0 at step 1 (before any update)
        for k, micro in enumerate(planned.micro_batches):
            local = shard_ids(micro.ids, accelerator.process_index, accelerator.num_processes)
            chunk = [by_id[i] for i in local]
            # DDP: all-reduce the gradients only on the step's last micro-batch
            sync = contextlib.nullcontext() if k == n - 1 else accelerator.no_sync(model)
            with sync:
                batch = {key: v.to(accelerator.device) for key, v in collate(processor, chunk, perturbed).items()}
                out = forward_logps(model, batch, parts=3 if perturbed else 2)
                logps: dict[str, Any] = {
                    "policy_chosen_logps": out["chosen"],
                    "policy_rejected_logps": out["rejected"],
                    "policy_chosen_perturbed_logps": out.get("chosen_perturbed"),
                    **{f"ref_{key}_logps": torch.tensor([getattr(ref[i], f"ref_{key}_logps") for i in local],
                                                        device=accelerator.device)
                       for key in ("chosen", "rejected", "chosen_perturbed")},
                }
                loss, metrics = compute_loss(config.loss, logps, **config.loss_options())
                accelerator.backward(loss / n)  # the step's gradient: mean over its micro-batches
            for key, value in {"loss": float(loss.detach()), **metrics}.items():
                sums[key] = sums.get(key, 0.0) + value / n
            ratio = (logps["policy_chosen_logps"].detach().float() - logps["ref_chosen_logps"]).abs().max()
            worst_ratio = max(worst_ratio, float(ratio))
        if accelerator.num_processes > 1:  # the logged metrics are the mean over every process's share
            keys = sorted(sums)
            means = accelerator.reduce(torch.tensor([sums[key] for key in keys], device=accelerator.device), "mean")
            sums = {key: float(v) for key, v in zip(keys, means.tolist(), strict=True)}
        # the norm before clipping; max_grad_norm 0 clips at infinity, a no-op that still measures it
        norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm or math.inf)
        optimizer.step()
        optimizer.zero_grad()
        done_micro += n
        step += 1
        if not stages_seen or stages_seen[-1] != planned.stage:
            stages_seen.append(planned.stage)
        last = {"step": step, "stage": planned.stage, "micro_batches": n, "loss": round(sums.pop("loss"), 8),
                "lr": lr, **_rounded(sums), **({"grad_norm": float(norm)} if norm is not None else {}),
                "logratio/chosen_abs_max": worst_ratio}  # grad_norm None: DeepSpeed clips by its own config
        if step % config.logging_steps == 0:
            record(last)
        progress.set_postfix({"stage": planned.stage, "loss": f"{last['loss']:.4f}",
                              **{name: f"{last[key]:.2f}" for name, key in (("acc_text", "rewards/text_accuracy"),
                                                                           ("acc_image", "rewards/image_accuracy"))
                                 if key in last},
                              "lr": f"{lr:.2e}"}, refresh=False)
        progress.update(1)
        if held and (step == total or (config.eval_steps and step % config.eval_steps == 0)):
            with bar(total=len(held), desc=f"eval @ {step}", unit="item", leave=False) as eval_progress:
                scores = _rounded(evaluate(model, processor, held, held_ref, config, accelerator.device,
                                           accelerator.autocast, progress=eval_progress.update))
            record({"step": step, **scores})
            info("eval @ step %d: loss %.4f, text accuracy %.3f margin %.4f, image accuracy %.3f margin %.4f "
                 "(%d items)", step, scores["eval/loss"], scores["eval/rewards/text_accuracy"],
                 scores["eval/rewards/text_margin"], scores["eval/rewards/image_accuracy"],
                 scores["eval/rewards/image_margin"], scores["eval/items"])
        if config.save_steps and step % config.save_steps == 0:
            target = output / "checkpoints" / f"step-{step}"
            accelerator.save_state(str(target))
            (target / "trainer_state.json").write_text(json.dumps({"step": step, "micro_batches": done_micro,
                                                                   "plan": fingerprint}))
            if remote and main:
                publish_run(output, remote)
            info("checkpoint %s", target.name)
    progress.close()
    trackers.close()
    accelerator.wait_for_everyone()
    final = output / "final"
    where = remote or str(output)
    if main:
        shutil.rmtree(final, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(str(final))
        processor.save_pretrained(str(final))
        if remote:
            publish_run(output, remote)
            shutil.rmtree(output, ignore_errors=True)
        info("trained %d steps (%s); final model in %s/final", step, " -> ".join(stages_seen) or "none", where)
    return {"steps": step, "stages": stages_seen, "untrained_stages": untrained, "last": last,
            **({"eval": scores} if held else {}), "output": where, "final": f"{where}/final"}
