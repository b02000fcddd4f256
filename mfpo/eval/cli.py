"""``mfpo eval``: generate answers, score them, probe the modality balance, and write the report."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

eval_app = typer.Typer(no_args_is_help=True, help="Measure hallucination: CHAIR / AMBER / POPE / MMHal-Bench / "
                                                  "LLaVA-Bench, the modality probe, and a before/after report.")
score_app = typer.Typer(no_args_is_help=True, help="Score an answer file (from `mfpo eval generate` or any tool).")
eval_app.add_typer(score_app, name="score")

ModelOpt = Annotated[str, typer.Option("--model", help="LLaVA / LLaVA-NeXT folder or hub id, or an adapter folder "
                                                       "from `mfpo train` (its base is read from it).")]
AdapterOpt = Annotated[str | None, typer.Option("--adapter", help="peft LoRA adapter folder on top of --model.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto | float32 | bfloat16 | float16.")]
JudgeUrl = Annotated[str, typer.Option("--judge-url", envvar="MFPO_JUDGE_BASE_URL",
                                       help="OpenAI-compatible base URL (…/v1).")]
JudgeKey = Annotated[str | None, typer.Option("--judge-key", envvar="MFPO_JUDGE_API_KEY",
                                                 help="Bearer key of the judge endpoint.")]
JudgeModel = Annotated[str, typer.Option("--judge-model", envvar="MFPO_JUDGE_MODEL", help="Judge model name.")]
JudgeHF = Annotated[Path | None, typer.Option("--judge-hf", help="Local Hugging Face causal LM folder as judge "
                                                                    "(instead of an endpoint).")]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def _bar(desc: str, total: int) -> Iterator[Callable[[int], None]]:
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True) as bar:
        yield bar.update


def _spec(model: str, adapter: str | None, device: str, dtype: str, name: str | None = None) -> Any:
    from pydantic import ValidationError

    from mfpo.eval.config import ModelSpec

    try:
        return ModelSpec.model_validate({"model": model, "adapter": adapter, "device": device, "dtype": dtype,
                                         "name": name})
    except ValidationError as exc:
        _fail(f"invalid model options: {exc}")


def _judge(url: str, key: str | None, model: str, hf: Path | None, device: str = "auto") -> Any:
    from mfpo.eval.config import JudgeConfig
    from mfpo.eval.judge import build_judge

    if hf is not None:
        return build_judge(JudgeConfig(kind="hf", model=str(hf), device=device))
    return build_judge(JudgeConfig(kind="openai", base_url=url, api_key=key, model=model))


def _emit(summary: dict[str, Any], out: Path | None, details: dict[str, Any] | None = None) -> None:
    from mfpo.eval.rows import write_json

    if out is not None:
        write_json(out, {"summary": summary, **(details or {})})
    typer.echo(json.dumps(summary, indent=2))


@eval_app.command("generate")
def generate_cmd(
    prompts: Annotated[Path, typer.Argument(help="Benchmark question file (JSON or JSON Lines).")],
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", help="Answer file (JSON Lines); re-runs resume it.")],
    adapter: AdapterOpt = None,
    image_dir: Annotated[Path | None, typer.Option(help="Image folder (default: the prompt file's).")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.")] = 512,
    sample: Annotated[bool, typer.Option("--sample/--greedy", help="Sampling or greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    prompt_suffix: Annotated[str, typer.Option(help="Text appended to each question.")] = "",
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts.")] = None,
    id_key: Annotated[str | None, typer.Option(help="Id field (default: question_id, id, image_id, or "
                                                       "'index' = row position).")] = None,
    question_key: Annotated[str | None, typer.Option(help="Question field (default: text, query, "
                                                             "question, prompt).")] = None,
    image_key: Annotated[str | None, typer.Option(help="Image field (default: image, image_path, image_file, "
                                                          "image_src).")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Answer a benchmark's prompts with a LLaVA model (+ LoRA adapter): batched, greedy, resumable."""
    from mfpo.eval.config import GenerationConfig
    from mfpo.eval.hf_runner import HFLlavaRunner
    from mfpo.eval.model import ModelLoadError
    from mfpo.eval.prompts import read_prompts
    from mfpo.eval.rows import RowsError, id_key_of, read_rows
    from mfpo.eval.runner import generate_answers

    try:
        rows = read_rows(prompts)
        items = read_prompts(prompts, id_key, question_key, image_key)
        config = GenerationConfig(batch_size=batch_size, max_new_tokens=max_new_tokens, do_sample=sample,
                                  temperature=temperature, prompt_suffix=prompt_suffix, limit=limit)
        runner = HFLlavaRunner.load(_spec(model, adapter, device, dtype))
    except (RowsError, ModelLoadError, ValueError) as exc:
        _fail(str(exc))
    with _bar("generate", min(len(items), limit or len(items))) as update:
        summary = generate_answers(items, runner, out, image_dir or prompts.parent, config, id_key_of(rows, id_key),
                                   update)
    typer.echo(json.dumps(summary.as_dict()))


@score_app.command("chair")
def score_chair_cmd(
    answers: Annotated[Path, typer.Argument(help="Answer file with image_id and text per answer.")],
    instances: Annotated[list[Path], typer.Option("--instances", help="COCO instances_*2014.json (repeatable).")],
    captions: Annotated[list[Path], typer.Option("--captions", help="COCO captions_*2014.json (repeatable).")],
    out: Annotated[Path | None, typer.Option("--out", help="Write summary + per-answer details here.")] = None,
    singularize: Annotated[str, typer.Option(help="pattern (as the reference) | lemminflect.")] = "pattern",
) -> None:
    """Object HalBench / CHAIR: CHAIR_s, CHAIR_i, object recall, answer length (percent)."""
    from mfpo.eval.chair import score_chair_files
    from mfpo.eval.config import ChairConfig

    try:
        result = score_chair_files(answers, instances, captions, ChairConfig.model_validate(
            {"singularize": singularize}))
    except (ValueError, OSError, KeyError) as exc:
        _fail(str(exc))
    _emit(dict(result.summary), out, {"items": result.items})


@score_app.command("pope")
def score_pope_cmd(
    answers: Annotated[list[Path], typer.Option("--answers", help="Answer file of a split (repeatable, in the "
                                                                  "order of --labels).")],
    labels: Annotated[list[Path], typer.Option("--labels", help="The split's label file, e.g. "
                                                                "coco_pope_random.json (repeatable).")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the metrics here.")] = None,
) -> None:
    """POPE: accuracy, precision, recall, F1 and yes-ratio per split (percent)."""
    from mfpo.eval.pope import score_pope, split_name

    if len(answers) != len(labels):
        _fail("give one --answers per --labels")
    try:
        result = score_pope({split_name(lab): (ans, lab) for ans, lab in zip(answers, labels, strict=True)})
    except (ValueError, OSError, KeyError) as exc:
        _fail(str(exc))
    _emit(result, out)


@score_app.command("amber")
def score_amber_cmd(
    answers: Annotated[Path, typer.Argument(help="Answers ([{id, response}] or `mfpo eval generate` output).")],
    annotations: Annotated[Path, typer.Option(help="AMBER data/annotations.json.")],
    relation: Annotated[Path, typer.Option(help="AMBER data/relation.json.")],
    safe_words: Annotated[Path, typer.Option(help="AMBER data/safe_words.txt.")],
    yes_no: Annotated[str, typer.Option(help="exact (reference: only 'Yes'/'No') | pope.")] = "exact",
    similarity: Annotated[str, typer.Option(help="none | minilm (near-synonyms).")] = "none",
    out: Annotated[Path | None, typer.Option("--out", help="Write metrics + per-item details here.")] = None,
) -> None:
    """AMBER: generative CHAIR / Cover / Hal / Cog and discriminative Acc / P / R / F1 (percent)."""
    from mfpo.eval.amber import score_amber_files
    from mfpo.eval.config import AmberConfig

    try:
        result = score_amber_files(answers, annotations, relation, safe_words,
                                   AmberConfig.model_validate({"yes_no": yes_no, "similarity": similarity}))
    except (ValueError, OSError, KeyError) as exc:
        _fail(str(exc))
    _emit({k: v for k, v in result.items() if k != "items"}, out, {"items": result["items"]})


@score_app.command("mmhal")
def score_mmhal_cmd(
    template: Annotated[Path, typer.Option(help="MMHal-Bench response_template.json (or a filled one).")],
    answers: Annotated[Path | None, typer.Argument(help="Answer file (omit when the template is filled).")] = None,
    judge_url: JudgeUrl = "https://api.openai.com/v1",
    judge_key: JudgeKey = None,
    judge_model: JudgeModel = "gpt-4-0613",
    judge_hf: JudgeHF = None,
    reviews: Annotated[Path | None, typer.Option(help="Judge reply cache (JSON Lines; reruns resume).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write summary + reviews here.")] = None,
) -> None:
    """MMHal-Bench: judge rating 0-6, hallucination rate, per question type."""
    from mfpo.eval.judge import JudgeError
    from mfpo.eval.mmhal import score_mmhal_files
    from mfpo.eval.rows import read_rows

    judge = _judge(judge_url, judge_key, judge_model, judge_hf)
    try:
        with _bar("judge", len(read_rows(template))) as update:
            result = score_mmhal_files(answers, template, judge, reviews, progress=update)
    except (ValueError, OSError, KeyError, JudgeError) as exc:
        _fail(str(exc))
    _emit({k: v for k, v in result.items() if k != "reviews"}, out, {"reviews": result["reviews"]})


@score_app.command("llava-bench")
def score_llava_bench_cmd(
    answers: Annotated[Path, typer.Argument(help="The model's answer file.")],
    questions: Annotated[Path, typer.Option(help="LLaVA-Bench questions.jsonl.")],
    context: Annotated[Path, typer.Option(help="LLaVA-Bench context.jsonl.")],
    reference: Annotated[Path, typer.Option(help="Reference answers (answers_gpt4.jsonl).")],
    judge_url: JudgeUrl = "https://api.openai.com/v1",
    judge_key: JudgeKey = None,
    judge_model: JudgeModel = "gpt-4-0613",
    judge_hf: JudgeHF = None,
    reviews: Annotated[Path | None, typer.Option(help="Judge reply cache (JSON Lines; reruns resume).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write summary + reviews here.")] = None,
) -> None:
    """LLaVA-Bench: relative score (model / reference x 100) per category."""
    from mfpo.eval.judge import JudgeError
    from mfpo.eval.llava_bench import score_llava_bench_files
    from mfpo.eval.rows import read_rows

    judge = _judge(judge_url, judge_key, judge_model, judge_hf)
    try:
        with _bar("judge", len(read_rows(questions))) as update:
            result = score_llava_bench_files(questions, context, reference, answers, judge, reviews, progress=update)
    except (ValueError, OSError, KeyError, JudgeError) as exc:
        _fail(str(exc))
    _emit({k: v for k, v in result.items() if k != "reviews"}, out, {"reviews": result["reviews"]})


@eval_app.command("probe")
def probe_cmd(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder made by `mfpo generate`.")],
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", help="Output folder: probe.jsonl per model, summary.json, "
                                                    "probe.png.")],
    adapter: AdapterOpt = None,
    compare: Annotated[str | None, typer.Option(help="A second (base) model, probed too and shown side by "
                                                        "side.")] = None,
    batch_size: Annotated[int, typer.Option(help="Items per forward pass.")] = 4,
    noise_step: Annotated[int, typer.Option(help="Diffusion step of the full-noise image (of 1000).")] = 999,
    limit: Annotated[int | None, typer.Option(help="Only the first N items.")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Modality probe (MFPO Fig. 1): text margin, image margin, preference under full noise."""
    from mfpo.eval.config import ProbeConfig
    from mfpo.eval.model import load_llava
    from mfpo.eval.plots import plot_probe
    from mfpo.eval.probe import compare_probes, load_probe_items, run_probe, summarize_probe
    from mfpo.eval.rows import write_json, write_jsonl

    config = ProbeConfig(batch_size=batch_size, noise_step=noise_step, limit=limit)
    specs = {}
    if compare:
        specs["base"] = _spec(compare, None, device, dtype, "base")
    specs["model" if not compare else "trained"] = _spec(model, adapter, device, dtype,
                                                        "trained" if compare else "model")
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        items = load_probe_items(dataset, config)
        for name, spec in specs.items():
            net, processor, dev = load_llava(spec)
            with _bar(f"probe {name}", len(items)) as update:
                runs[name] = run_probe(net, processor, dev, items, config, update)
            write_jsonl(out / f"probe_{name}.jsonl", runs[name])
            del net
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    summary: dict[str, Any] = {name: summarize_probe(rows) for name, rows in runs.items()}
    if len(runs) == 2:
        summary["rewards"] = compare_probes(runs["base"], runs["trained"])
    write_json(out / "summary.json", summary)
    plot_probe(runs, out / "probe.png")
    typer.echo(json.dumps(summary, indent=2))


@eval_app.command("report")
def report_cmd(
    config: Annotated[Path, typer.Option("--config", help="JSON file: benchmark files, generation, judge, probe "
                                                          "(ReportConfig).")],
    model: ModelOpt,
    out: Annotated[Path, typer.Option("--out", help="Output folder (re-runs resume).")],
    adapter: AdapterOpt = None,
    compare: Annotated[str | None, typer.Option(help="Base model to compare with (before training); adds a Δ "
                                                        "row.")] = None,
    judge_key: JudgeKey = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Run the configured benchmarks (and probe) for a model, or base vs trained; write report.json/.md + plots."""
    from pydantic import ValidationError

    from mfpo.eval.benchmarks import ReportConfig
    from mfpo.eval.judge import JudgeError, build_judge
    from mfpo.eval.report import run_report

    try:
        cfg = ReportConfig.load(config)
    except (ValidationError, OSError, ValueError, TypeError) as exc:
        _fail(f"invalid report config {config}: {exc}")
    judge = None
    if cfg.needs_judge:
        if cfg.judge is None:
            _fail("MMHal-Bench / LLaVA-Bench need a `judge` in the config")
        assert cfg.judge is not None
        judge_cfg = cfg.judge.model_copy(update={"api_key": judge_key}) if judge_key else cfg.judge
        judge = build_judge(judge_cfg)
    runs = {}
    if compare:
        runs["base"] = _spec(compare, None, device, dtype, "base")
    runs["trained" if compare else _spec(model, adapter, device, dtype).label] = _spec(
        model, adapter, device, dtype, "trained" if compare else None)
    try:
        report = run_report(cfg, runs, out, judge, _bar)
    except (ValueError, OSError, KeyError, JudgeError) as exc:
        _fail(str(exc))
    typer.echo((out / "report.md").read_text(encoding="utf-8"))
    typer.echo(f"report: {out / 'report.json'}, {out / 'report.md'}; plots: {', '.join(report['plots'])}")
