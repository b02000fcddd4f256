"""One command, one report: generate answers, score every configured benchmark, probe, tabulate, plot.

Layout of the output folder::

    OUT/runs/<run>/answers/<benchmark>.jsonl   answers (resumable: reruns skip answered questions)
    OUT/runs/<run>/scores/<benchmark>.json     summary + per-item details of each scorer
    OUT/runs/<run>/reviews/<benchmark>.jsonl   judge replies (cached: reruns ask only for new items)
    OUT/runs/<run>/probe.jsonl                 per-item probe rows
    OUT/report.json, OUT/report.md             every summary; the table (MFPO Table 1 style)
    OUT/probe.png, OUT/benchmarks.png          plots, runs side by side

Runs are evaluated one after another, each model loaded once for its generation and probe
and released before judging. With two runs (``--compare``: base first, trained second) the
table gets a Δ row and the report the probe's implicit rewards (:func:`mfpo.eval.probe.compare_probes`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from mfpo.eval.benchmarks import ReportConfig
from mfpo.eval.config import ModelSpec
from mfpo.eval.judge import Judge
from mfpo.eval.rows import id_key_of, read_rows, write_json, write_jsonl

Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]
"""(description, total) -> context manager giving an ``update(n)`` callback (the CLI passes tqdm bars)."""


@contextlib.contextmanager
def no_progress(desc: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


def generation_jobs(config: ReportConfig) -> list[tuple[str, Path, Path]]:
    """(answer file stem, prompt file, image folder) of every benchmark that needs answers."""
    from mfpo.eval.pope import split_name

    jobs: list[tuple[str, Path, Path]] = []
    if config.object_halbench:
        q = config.object_halbench.questions
        jobs.append(("object_halbench", q, config.object_halbench.image_dir or q.parent))
    if config.pope:
        jobs += [(f"pope_{split_name(p)}", p, config.pope.image_dir) for p in config.pope.splits]
    if config.amber:
        jobs.append(("amber", config.amber.queries, config.amber.image_dir))
    if config.mmhal:
        jobs.append(("mmhal", config.mmhal.template, config.mmhal.image_dir))
    if config.llava_bench:
        jobs.append(("llava_bench", config.llava_bench.questions, config.llava_bench.image_dir))
    return jobs


def claim_run_dir(run_dir: Path, spec: ModelSpec) -> None:
    """Record which model a run folder's answers come from (``model.json``); a rerun with another model there is an
    error rather than a report that mixes two models' answers."""
    import json

    marker = run_dir / "model.json"
    mine = {"model": spec.model, "adapter": spec.adapter}
    if marker.is_file():
        theirs = json.loads(marker.read_text(encoding="utf-8"))
        if theirs != mine:
            raise ValueError(f"{run_dir} holds the answers of {theirs}, not {mine}: use another --out")
        return
    write_json(marker, mine)


def generate_and_probe(config: ReportConfig, spec: ModelSpec, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """Answers for every benchmark and the probe rows of one model; returns the generation summaries."""
    from mfpo.eval.hf_runner import HFLlavaRunner
    from mfpo.eval.prompts import read_prompts
    from mfpo.eval.runner import generate_answers

    claim_run_dir(run_dir, spec)
    runner = HFLlavaRunner.load(spec)
    done: dict[str, Any] = {}
    try:
        for stem, prompts_path, image_dir in generation_jobs(config):
            rows = read_rows(prompts_path)
            prompts = read_prompts(prompts_path)
            todo = min(len(prompts), config.generation.limit or len(prompts))
            with progress(f"{spec.label} {stem}", todo) as update:
                done[stem] = generate_answers(prompts, runner, run_dir / "answers" / f"{stem}.jsonl", image_dir,
                                              config.generation, id_key_of(rows), update).as_dict()
        if config.probe_dataset is not None:
            from mfpo.eval.probe import load_probe_items, run_probe

            items = load_probe_items(config.probe_dataset, config.probe)
            path = run_dir / "probe.jsonl"
            have = {str(r["id"]): r for r in read_rows(path)} if path.is_file() else {}
            missing = [i for i in items if i.id not in have]
            with progress(f"{spec.label} probe", len(items)) as update:
                update(len(items) - len(missing))
                fresh = {str(r["id"]): r for r in run_probe(runner.model, runner.processor, runner.device, missing,
                                                           config.probe, update)}
            write_jsonl(path, [have.get(i.id) or fresh[i.id] for i in items])
    finally:
        del runner
        gc.collect()
    return done


def score_run(config: ReportConfig, run_dir: Path, judge: Judge | None, progress: Progress) -> dict[str, Any]:
    """Summaries of every configured benchmark from the run's answer files (details go to scores/)."""
    results: dict[str, Any] = {}
    answers, scores = run_dir / "answers", run_dir / "scores"
    if config.object_halbench:
        from mfpo.eval.chair import score_chair_files

        oh = config.object_halbench
        chair = score_chair_files(answers / "object_halbench.jsonl", oh.instances, oh.captions, oh.chair)
        write_json(scores / "object_halbench.json", {"summary": chair.summary, "items": chair.items})
        results["object_halbench"] = chair.summary
    if config.pope:
        from mfpo.eval.pope import score_pope, split_name

        pope = score_pope({split_name(p): (answers / f"pope_{split_name(p)}.jsonl", p) for p in config.pope.splits})
        write_json(scores / "pope.json", pope)
        results["pope"] = pope
    if config.amber:
        from mfpo.eval.amber import score_amber_files

        am = config.amber
        amber = score_amber_files(answers / "amber.jsonl", am.annotations, am.relation, am.safe_words, am.amber)
        write_json(scores / "amber.json", amber)
        results["amber"] = {k: v for k, v in amber.items() if k != "items"}
    if (config.mmhal or config.llava_bench) and judge is None:
        raise ValueError("MMHal-Bench and LLaVA-Bench need a judge (the config's `judge`)")
    temperature = config.judge.temperature if config.judge else None
    max_tokens = config.judge.max_tokens if config.judge else 1024
    if config.mmhal and judge is not None:
        from mfpo.eval.mmhal import score_mmhal_files

        with progress("judge mmhal", len(read_rows(config.mmhal.template))) as update:
            mmhal = score_mmhal_files(answers / "mmhal.jsonl", config.mmhal.template, judge,
                                      run_dir / "reviews" / "mmhal.jsonl", temperature, max_tokens, progress=update)
        write_json(scores / "mmhal.json", mmhal)
        results["mmhal"] = {k: v for k, v in mmhal.items() if k != "reviews"}
    if config.llava_bench and judge is not None:
        from mfpo.eval.llava_bench import score_llava_bench_files

        lb = config.llava_bench
        with progress("judge llava-bench", len(read_rows(lb.questions))) as update:
            bench = score_llava_bench_files(lb.questions, lb.context, lb.reference, answers / "llava_bench.jsonl",
                                            judge, run_dir / "reviews" / "llava_bench.jsonl", progress=update,
                                            temperature=temperature, max_tokens=max_tokens)
        write_json(scores / "llava_bench.json", bench)
        results["llava_bench"] = {k: v for k, v in bench.items() if k != "reviews"}
    if (run_dir / "probe.jsonl").is_file():
        from mfpo.eval.probe import summarize_probe

        results["probe"] = summarize_probe(read_rows(run_dir / "probe.jsonl"))
    return results


def render_markdown(report: Mapping[str, Any]) -> str:
    """report.md: the table, then the details a reader checks (POPE splits, AMBER dimensions, probe)."""
    from mfpo.eval.table import markdown_table

    runs = report["runs"]
    names = list(runs)
    delta = (names[0], names[1]) if len(names) == 2 else None
    parts = ["# Hallucination report\n", "Rates in %, MMHal-Bench score 0-6; ↑ higher is better, ↓ lower.\n",
             markdown_table(report["table"], delta)]
    for name, run in runs.items():
        parts.append(f"\n## {name}\n\nmodel: `{run['model']['model']}`"
                     + (f", adapter: `{run['model']['adapter']}`" if run["model"].get("adapter") else "") + "\n")
        results = run["results"]
        if "pope" in results:
            parts.append("\nPOPE | Acc | Prec | Rec | F1 | Yes\n---|---:|---:|---:|---:|---:")
            for split, m in results["pope"]["splits"].items():
                parts.append(f"{split} | {m['accuracy']:.2f} | {m['precision']:.2f} | {m['recall']:.2f} | "
                             f"{m['f1']:.2f} | {m['yes_ratio']:.2f}")
        if "discriminative" in results.get("amber", {}):
            parts.append("\nAMBER discriminative | Acc | Prec | Rec | F1\n---|---:|---:|---:|---:")
            for dim in ("overall", "existence", "attribute", "relation"):
                m = results["amber"]["discriminative"][dim]
                parts.append(f"{dim} | {m['accuracy']:.2f} | {m['precision']:.2f} | {m['recall']:.2f} | "
                             f"{m['f1']:.2f}")
        if "mmhal" in results:
            per_type = ", ".join(f"{t} {v:.2f}" for t, v in results["mmhal"]["per_type"].items())
            parts.append(f"\nMMHal-Bench per type: {per_type} (unparsed replies: {results['mmhal']['unparsed']})")
        if "probe" in results:
            p = results["probe"]
            parts.append(f"\nProbe ({p['n']} items): prefers y_w with the true image {p['prefers_chosen']:.1f}%, "
                         f"with full noise {p['prefers_chosen_noise']:.1f}% (gap {p['noise_gap']:.1f}); prefers "
                         f"m over m' {p['prefers_original_image']:.1f}%; mean text margin "
                         f"{p['text_margin']['mean']:.3f}, mean image margin {p['image_margin']['mean']:.3f}")
    if "probe_rewards" in report:
        r = report["probe_rewards"]
        parts.append(f"\n## Implicit rewards of training ({names[1]} vs {names[0]})\n\ntext reward margin mean "
                     f"{r['text_reward_margin']['mean']:.3f} (rose for {r['text_reward_up']:.1f}% of items), image "
                     f"reward margin mean {r['image_reward_margin']['mean']:.3f} (rose for "
                     f"{r['image_reward_up']:.1f}%)")
    parts.append("\n" + "".join(f"![{p}]({p})\n" for p in report.get("plots", [])))
    return "\n".join(parts) + "\n"


def run_report(config: ReportConfig, runs: Mapping[str, ModelSpec], out_dir: Path, judge: Judge | None = None,
               progress: Progress = no_progress) -> dict[str, Any]:
    """Evaluate every run (name -> model), write report.json, report.md and the plots; returns the report."""
    from mfpo.eval.plots import plot_metrics, plot_probe
    from mfpo.eval.table import table_rows

    out_dir = Path(out_dir)
    if not runs:
        raise ValueError("no model to evaluate")
    report: dict[str, Any] = {"runs": {}, "plots": []}
    for name, spec in runs.items():
        run_dir = out_dir / "runs" / name
        generated = generate_and_probe(config, spec, run_dir, progress)
        report["runs"][name] = {"model": spec.model_dump(mode="json"), "generation": generated}
    for name in runs:
        report["runs"][name]["results"] = score_run(config, out_dir / "runs" / name, judge, progress)
    report["table"] = table_rows({n: r["results"] for n, r in report["runs"].items()})
    probes = {n: read_rows(out_dir / "runs" / n / "probe.jsonl") for n in runs
              if (out_dir / "runs" / n / "probe.jsonl").is_file()}
    if probes:
        plot_probe(probes, out_dir / "probe.png")
        report["plots"].append("probe.png")
        if len(probes) == 2:
            from mfpo.eval.probe import compare_probes

            base, trained = list(probes.values())
            report["probe_rewards"] = compare_probes(base, trained)
    if any(report["table"].values()):
        plot_metrics(report["table"], out_dir / "benchmarks.png")
        report["plots"].append("benchmarks.png")
    write_json(out_dir / "report.json", report)
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report
