"""The whole testbed, resumable step by step: world -> datasets -> base model(s) -> runs -> report.

Layout of ``out``::

    config.json                 the configuration that ran (a copy of the committed file)
    world/sft/                  SFT rows (trainer.sft format) and images
    world/preference/, world/test/   preference items (native format, exact annotations) + truth.jsonl
    data/{kind}-t{t}/           preference datasets made by `mfpo generate` (embedded); data/probe-t500/ the
                                held-out one the modality probe reads
    base/seed-{s}/              random init, SFT run (metrics.jsonl, final/), result.json, probe.jsonl
    runs/seed-{s}/{run}/        preference run (train/: metrics.jsonl, final/), result.json, probe.jsonl
    report.md, report.json, plots/

Every step is skipped when its output exists, so a killed run continues where it stopped; delete ``out``
(or use a new one) after changing the configuration: the report refuses results made under another one.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mfpo.testbed.config import TestbedConfig
from mfpo.testbed.data import dataset_key
from mfpo.testbed.runs import RESULT, read_rows, score, train_and_score

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def config_digest(config: TestbedConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def _prepare_out(config: TestbedConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    text = config.model_dump_json(indent=2)
    if saved.is_file() and TestbedConfig.model_validate_json(saved.read_text()) != config:
        raise ValueError(f"{out} holds results of another configuration ({saved}); use a new --out")
    saved.write_text(text + "\n")


def build_world(config: TestbedConfig, out: Path, log: Log) -> dict[str, Path]:
    """SFT folder and the preference / test items (skipped when written)."""
    from mfpo.testbed.data import write_items, write_sft

    paths = {"sft": out / "world" / "sft", "preference": out / "world" / "preference" / "items.jsonl",
             "test": out / "world" / "test" / "items.jsonl"}
    if not (paths["sft"] / "sft.jsonl").is_file():
        write_sft(config.world, paths["sft"])
        log(f"world: {config.world.sft_scenes} SFT scenes -> {paths['sft']}")
    for split in ("preference", "test"):
        if not paths[split].is_file():
            write_items(config.world, split, paths[split].parent)
            log(f"world: {split} items -> {paths[split]}")
    return paths


def build_datasets(config: TestbedConfig, runs: tuple[Any, ...], world: dict[str, Path], out: Path,
                   log: Log) -> dict[str, Path]:
    """Every preference dataset the runs need, and the probe's held-out one, through ``mfpo generate``: one per
    (region mode, noise step), holding MFPO's noise and the siblings' negatives the runs ask for."""
    from mfpo.testbed.data import REGION_MODES, SIBLINGS, dataset_key, generate_config, generate_dataset

    wanted: dict[str, tuple[str, int, set[str]]] = {}
    for r in runs:
        kind = r.negatives
        key = dataset_key(kind, r.noise_step)
        mode, step, kinds = wanted.setdefault(key, (REGION_MODES[kind], r.noise_step, {"mfpo"}))
        if kind in SIBLINGS:
            kinds.add(kind)
    paths: dict[str, Path] = {}
    for key, (mode, step, kinds) in sorted(wanted.items()):
        ordered = ["mfpo", *sorted(kinds - {"mfpo"})]  # mfpo first: the record's rejected_image
        settings = sibling_settings(config, ordered, out)
        paths[key] = out / "data" / key
        summary = generate_dataset(world["preference"], paths[key],
                                   generate_config(mode, step, config.model.image_size, ordered, settings))
        log(f"data: {key} ({', '.join(ordered)}): {summary['records']} records, {summary['fallback']} fallbacks "
            f"({summary['seconds']} s)")
    paths["probe"] = build_probe_dataset(config, world, out, log)
    return paths


def build_probe_dataset(config: TestbedConfig, world: dict[str, Path], out: Path, log: Log) -> Path:
    """The modality probe's dataset: the held-out scenes through ``mfpo generate`` (annotation regions, t = 500,
    MFPO's noise), in ``out/data/probe-t500``."""
    from mfpo.testbed.data import generate_config, generate_dataset

    path = out / "data" / "probe-t500"
    summary = generate_dataset(world["test"], path, generate_config("annotations", 500, config.model.image_size,
                                                                    ["mfpo"]))
    log(f"data: probe-t500 (held-out scenes): {summary['records']} records")
    return path


def sibling_settings(config: TestbedConfig, kinds: list[str], out: Path) -> dict[str, Any]:
    """``negatives`` settings of the siblings in ``kinds``; AdaViP's CLIP is written first when it is tiny-random."""
    settings: dict[str, Any] = {}
    if "mdpo" in kinds:
        settings["mdpo"] = config.mdpo.model_dump(mode="json")
    if "adavip" in kinds:
        clip = config.clip_model
        if clip == "tiny-random":
            from mfpo.models.tiny import write_tiny_clip

            folder = out / "models" / "clip"
            if not (folder / "config.json").is_file():
                write_tiny_clip(folder, seed=0)
            clip = str(folder)
        settings["adavip"] = {**config.adavip.model_dump(mode="json", exclude={"clip"}),
                              "clip": {"model_path": clip, "device": "cpu", "dtype": "float32"}}
    return settings


def build_base(config: TestbedConfig, seed: int, world: dict[str, Path], evalset: Any, out: Path,
               log: Log) -> str:
    """Train (random init -> SFT) and score the base model of ``seed``, unless done; returns a log line."""
    from mfpo.testbed.model import write_testbed_llava
    from mfpo.testbed.world import world_words
    from trainer.sft import read_sft_rows, sft_train

    folder = out / "base" / f"seed-{seed}"
    final = folder / "sft" / "final"
    if not (final / "config.json").is_file():
        init = write_testbed_llava(folder / "init", config.model, world_words(config.world), seed=seed)
        rows, images = read_sft_rows(world["sft"])
        sft = config.sft.model_copy(update={"seed": seed})
        last = [time.perf_counter()]

        def progress(step: int, loss: float) -> None:
            if time.perf_counter() - last[0] > 120:
                last[0] = time.perf_counter()
                log(f"base seed {seed}: SFT step {step}, loss {loss:.4f}")

        summary = sft_train(sft, rows, images, str(init), folder / "sft", progress=progress)
        log(f"base seed {seed}: SFT {summary['steps']} steps, loss {summary['first_loss']:.3f} -> "
            f"{summary['last_loss']:.3f} ({summary['seconds']} s)")
    if (folder / RESULT).is_file():
        return f"base seed {seed}: done before"
    metrics = score(str(final), evalset, config, folder, None)
    sft_summary = json.loads((folder / "sft" / "summary.json").read_text())
    (folder / RESULT).write_text(json.dumps({"run": "base", "seed": seed, "sft": sft_summary, "metrics": metrics},
                                            indent=1) + "\n")
    c = metrics["captions"]
    return (f"base seed {seed}: recall {c['recall']:.1f}%, CHAIR_i {c['chair_i']:.1f}%, prior hallucination "
            f"{c['prior_hallucination']:.1f}% (SFT {sft_summary['seconds']:.0f} s, eval {metrics['seconds']:.0f} s)")


# --- worker processes ---------------------------------------------------------------------------------------

_state: dict[str, Any] = {}


def _init_worker(config_json: str, probe_dataset: str) -> None:
    import torch

    config = TestbedConfig.model_validate_json(config_json)
    torch.set_num_threads(config.threads)
    _state["config"] = config
    _state["probe"] = Path(probe_dataset)


def _evalset() -> Any:
    from mfpo.testbed.evaluate import EvalSet

    if "evalset" not in _state:
        config = _state["config"]
        _state["evalset"] = EvalSet.build(config.world, config.eval, _state["probe"])
    return _state["evalset"]


def _base_job(seed: int, world: dict[str, Path], out: Path) -> str:
    return build_base(_state["config"], seed, world, _evalset(), out, _stderr)


def _run_job(seed: int, name: str, dataset: Path, base_seed: int, out: Path) -> str:
    config: TestbedConfig = _state["config"]
    spec = config.run(name)
    base = out / "base" / f"seed-{base_seed}"
    folder = out / "runs" / f"seed-{seed}" / name
    if (folder / RESULT).is_file():
        return f"seed {seed} {name}: done before"
    result = train_and_score(spec, seed, config, dataset, base / "sft" / "final", _evalset(),
                             read_rows(base / "probe.jsonl"), folder)
    c, p = result["metrics"]["captions"], result["metrics"]["pope"]["adversarial"]
    return (f"seed {seed} {name}: CHAIR_i {c['chair_i']:.1f}%, recall {c['recall']:.1f}%, prior hallucination "
            f"{c['prior_hallucination']:.1f}%, POPE-adv F1 {p['f1']:.1f} (train {result['train']['seconds']:.0f} s, "
            f"eval {result['metrics']['seconds']:.0f} s)")


def _run_jobs(config: TestbedConfig, probe: Path, jobs: list[tuple[Callable[..., str], tuple[Any, ...]]],
              log: Log) -> None:
    """Run the jobs in ``config.workers`` processes (in this one when 1), logging each finished one."""
    if config.workers == 1 or len(jobs) == 1:
        _init_worker(config.model_dump_json(), str(probe))
        for fn, args in jobs:
            log(fn(*args))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(config.workers, mp_context=context, initializer=_init_worker,
                             initargs=(config.model_dump_json(), str(probe))) as pool:
        futures = [pool.submit(fn, *args) for fn, args in jobs]
        for future in as_completed(futures):
            log(future.result())


def run_testbed(config: TestbedConfig, out: Path, quick: bool = False, log: Log = _stderr) -> dict[str, Any]:
    """Run (or finish) the testbed into ``out`` and write the report; returns report.json's content."""
    import torch

    from mfpo.testbed.report import write_report

    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    out = Path(out)
    _prepare_out(config, out)
    runs, seeds = config.select(quick)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    world = build_world(config, out, log)
    datasets = build_datasets(config, runs, world, out, log)
    timings["data"] = time.perf_counter() - t

    base_seeds = seeds if config.base_per_seed else (0,)
    t = time.perf_counter()
    _run_jobs(config, datasets["probe"], [(_base_job, (s, world, out)) for s in base_seeds], log)
    timings["base"] = time.perf_counter() - t

    t = time.perf_counter()
    jobs: list[tuple[Callable[..., str], tuple[Any, ...]]] = [
        (_run_job, (seed, spec.name, datasets[dataset_key(spec.negatives, spec.noise_step)],
                    seed if config.base_per_seed else 0, out))
        for seed in seeds for spec in runs]
    _run_jobs(config, datasets["probe"], jobs, log)
    timings["runs"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started
    report = write_report(config, out, runs, seeds, quick, _add_timings(out, quick, timings))
    log(f"report: {out / 'report.md'} ({timings['total']:.0f} s this invocation)")
    return report


def _add_timings(out: Path, quick: bool, timings: dict[str, float]) -> dict[str, float]:
    """This invocation's step times added to those of the earlier invocations on ``out`` (``timings.json``, per
    mode): a resumed folder reports what making it cost in all, and re-running a finished one adds only the
    seconds it took to read it back."""
    path = out / "timings.json"
    kept: dict[str, dict[str, float]] = json.loads(path.read_text()) if path.is_file() else {}
    mode = "quick" if quick else "full"
    summed = {k: round(kept.get(mode, {}).get(k, 0.0) + v, 1) for k, v in timings.items()}
    path.write_text(json.dumps({**kept, mode: summed}, indent=1))
    return summed
