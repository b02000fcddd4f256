"""The testbed's report (issue 16, item 6): a table per paper table, mean and 95% interval over seeds, plots.

Every cell is the mean over seeds and the half-width of the 95% Student-t interval (mean +- t_{0.975, n-1}
s / sqrt(n); one seed: no interval). Columns: CHAIR_s, CHAIR_i, recall (captions, percent), prior
hallucination (share of held-out scenes with an anchor but not its partner whose caption names the
partner), POPE adversarial accuracy / F1 / yes-ratio and mean-over-splits F1, colour / count accuracy,
and the modality probe: the text and image reward margins that training added (trained minus base,
MFPO Fig. 1a) and the share of items that still prefer y_w under a destroyed image (Fig. 1b).

The MFPO-vs-DPO verdict uses paired differences (same seed, same base): their mean and 95% interval;
"better" / "worse" only when the interval excludes 0 ("lower" / "higher" for the probe, which has no better
direction). Plots (PNG): rewards of chosen and rejected answers per step
with and without L_margin (MFPO Fig. 6), loss per step easy-to-hard vs end-to-end with the stage
boundaries (Fig. 7), and the probe's margins and preferences for base / DPO / MFPO
(:func:`mfpo.eval.plots.plot_probe`).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mfpo.testbed.config import RunSpec, TestbedConfig
from mfpo.testbed.runs import PROBE, RESULT, read_rows

Getter = Callable[[Mapping[str, Any]], float]

COLUMNS: tuple[tuple[str, str, Getter], ...] = (
    ("CHAIR_s", "lower", lambda m: m["captions"]["chair_s"]),
    ("CHAIR_i", "lower", lambda m: m["captions"]["chair_i"]),
    ("Recall", "higher", lambda m: m["captions"]["recall"]),
    ("Prior hall.", "lower", lambda m: m["captions"]["prior_hallucination"]),
    ("POPE-adv acc", "higher", lambda m: m["pope"]["adversarial"]["accuracy"]),
    ("POPE-adv F1", "higher", lambda m: m["pope"]["adversarial"]["f1"]),
    ("POPE-adv yes%", "-", lambda m: m["pope"]["adversarial"]["yes_ratio"]),
    ("POPE F1 (mean)", "higher", lambda m: m["pope"]["mean"]["f1"]),
    ("Attr. acc", "higher", lambda m: m["answers"].get("all", float("nan"))),
)
"""(column, better direction, value from a run's metrics) of every table."""

PROBE_COLUMNS: tuple[tuple[str, str, Getter], ...] = (
    ("text reward margin", "-", lambda m: m["probe_vs_base"]["text_reward_margin"]["mean"]),
    ("image reward margin", "-", lambda m: m["probe_vs_base"]["image_reward_margin"]["mean"]),
    ("prefers y_w (true image) %", "-", lambda m: m["probe"]["prefers_chosen"]),
    ("prefers y_w (destroyed image) %", "-", lambda m: m["probe"]["prefers_chosen_noise"]),
    ("prefers m over m' %", "-", lambda m: m["probe"]["prefers_original_image"]),
)
"""The modality probe (MFPO Fig. 1): reward margins training added and preferences."""

T_975 = (math.nan, 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def interval(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% Student-t interval); half-width NaN for one value."""
    mean = statistics.fmean(values)
    n = len(values)
    if n < 2:
        return mean, math.nan
    t = T_975[n - 1] if n - 1 < len(T_975) else 1.96
    return mean, t * statistics.stdev(values) / math.sqrt(n)


def cell(values: Sequence[float]) -> str:
    if not values or any(math.isnan(v) for v in values):
        return "-"
    mean, half = interval(values)
    return f"{mean:.1f}" if math.isnan(half) else f"{mean:.1f} ± {half:.1f}"


def load_results(out: Path, runs: Sequence[RunSpec], seeds: Sequence[int], base_per_seed: bool) -> dict[str, list[
        dict[str, Any]]]:
    """Results by run name (``base`` included), one per seed, in seed order."""
    results: dict[str, list[dict[str, Any]]] = {}
    base_seeds = seeds if base_per_seed else (0,)
    results["base"] = [json.loads((out / "base" / f"seed-{s}" / RESULT).read_text()) for s in base_seeds]
    for spec in runs:
        results[spec.name] = [json.loads((out / "runs" / f"seed-{s}" / spec.name / RESULT).read_text())
                              for s in seeds]
    return results


def _values(results: Sequence[Mapping[str, Any]], get: Getter) -> list[float]:
    out = []
    for r in results:
        try:
            out.append(float(get(r["metrics"])))
        except KeyError:
            out.append(math.nan)
    return out


def table_rows(config: TestbedConfig, names: Sequence[str], results: Mapping[str, Sequence[Mapping[str, Any]]],
               columns: Sequence[tuple[str, str, Getter]]) -> list[dict[str, Any]]:
    """One dict per row: run, title, and per column [mean, half-width, values]."""
    rows = []
    for name in names:
        if name not in results:
            continue
        title = "base (SFT)" if name == "base" else config.run(name).title
        row: dict[str, Any] = {"run": name, "title": title}
        for col, _, get in columns:
            values = _values(results[name], get)
            mean, half = interval(values) if values and not any(math.isnan(v) for v in values) else (math.nan,
                                                                                                    math.nan)
            row[col] = {"mean": mean, "ci95": half, "values": values}
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, Getter]]) -> str:
    arrows = {"lower": " ↓", "higher": " ↑", "-": ""}
    head = "| run | " + " | ".join(c + arrows[d] for c, d, _ in columns) + " |"
    sep = "|---|" + "---|" * len(columns)
    lines = [head, sep]
    for r in rows:
        cells = [cell(r[c]["values"]) for c, _, _ in columns]
        lines.append(f"| {r['title']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired(results: Mapping[str, Sequence[Mapping[str, Any]]], a: str, b: str,
           columns: Sequence[tuple[str, str, Getter]]) -> dict[str, dict[str, float]]:
    """Per column: mean and 95% interval of (a - b) over the seeds both ran, and the verdict: better / worse
    where the interval excludes 0 (lower / higher for the probe's columns, which have no better direction),
    else same."""
    out: dict[str, dict[str, float]] = {}
    by_seed_b = {r["seed"]: r for r in results.get(b, [])}
    pairs = [(r, by_seed_b[r["seed"]]) for r in results.get(a, []) if r["seed"] in by_seed_b]
    if not pairs:
        return out
    for col, better, get in columns:
        diffs = [x - y for x, y in zip(_values([p[0] for p in pairs], get), _values([p[1] for p in pairs], get),
                                       strict=True)]
        if any(math.isnan(d) for d in diffs):
            continue
        mean, half = interval(diffs)
        excludes = not math.isnan(half) and abs(mean) > half
        verdict = "same"
        if excludes and better != "-":
            verdict = "better" if (mean < 0) == (better == "lower") else "worse"
        elif excludes:  # a probe figure: no better direction, but the runs differ
            verdict = "lower" if mean < 0 else "higher"
        out[col] = {"mean": mean, "ci95": half, "n": len(diffs), "verdict": verdict}  # type: ignore[dict-item]
    return out


def _curves(out: Path, seed: int, run: str) -> list[dict[str, Any]]:
    path = out / "runs" / f"seed-{seed}" / run / "train" / "metrics.jsonl"
    return [r for r in read_rows(path) if "loss" in r] if path.is_file() else []


def plot_rewards(out: Path, seed: int, runs: Sequence[tuple[str, str]], path: Path) -> Path | None:
    """MFPO Fig. 6: rewards of chosen and rejected answers per optimizer step, per run (with / without L_margin)."""
    from mfpo.eval.plots import pyplot, save_figure

    curves = {title: _curves(out, seed, name) for name, title in runs}
    if not any(curves.values()):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for k, (title, rows) in enumerate(curves.items()):
        color = f"C{k}"
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["rewards/chosen"] for r in rows], color=color, label=f"{title}: chosen")
        ax.plot(steps, [r["rewards/rejected"] for r in rows], color=color, linestyle="--",
                label=f"{title}: rejected")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("implicit reward  beta log(pi / pi_ref)")
    ax.set_title(f"Rewards with and without L_margin (MFPO Fig. 6), seed {seed}")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_losses(out: Path, seed: int, runs: Sequence[tuple[str, str]], path: Path) -> Path | None:
    """MFPO Fig. 7: training loss per optimizer step, easy-to-hard (stage boundaries marked) vs end-to-end."""
    from mfpo.eval.plots import pyplot, save_figure

    curves = {title: _curves(out, seed, name) for name, title in runs}
    if not any(curves.values()):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for k, (title, rows) in enumerate(curves.items()):
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], color=f"C{k}", label=title)
        for prev, cur in itertools.pairwise(rows):
            if prev["stage"] != cur["stage"]:
                ax.axvline(cur["step"] - 0.5, color=f"C{k}", linestyle=":", linewidth=0.8)
                ax.text(cur["step"], ax.get_ylim()[1], cur["stage"], fontsize=7, va="top", color=f"C{k}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(f"Loss, easy-to-hard vs end-to-end (MFPO Fig. 7), seed {seed}")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_plots(config: TestbedConfig, out: Path, names: set[str], seed: int) -> list[str]:
    from mfpo.eval.plots import plot_probe

    made: list[Path | None] = []
    fig6 = [(n, config.run(n).title) for n in ("text-only", "text-margin", "mfpo") if n in names]
    made.append(plot_rewards(out, seed, fig6, out / "plots" / "fig6-rewards.png"))
    fig7 = [(n, config.run(n).title) for n in ("mfpo", "end-to-end", "dpo") if n in names]
    made.append(plot_losses(out, seed, fig7, out / "plots" / "fig7-losses.png"))
    probe_runs: dict[str, list[dict[str, Any]]] = {}
    base = out / "base" / f"seed-{seed if config.base_per_seed else 0}" / PROBE
    if base.is_file():
        probe_runs["base"] = read_rows(base)
    for n in ("dpo", "mfpo"):
        path = out / "runs" / f"seed-{seed}" / n / PROBE
        if n in names and path.is_file():
            probe_runs[n] = read_rows(path)
    if probe_runs:
        made.append(plot_probe(probe_runs, out / "plots" / "probe.png"))
    return [str(p.relative_to(out)) for p in made if p is not None]


def write_report(config: TestbedConfig, out: Path, runs: Sequence[RunSpec], seeds: Sequence[int], quick: bool,
                 timings: Mapping[str, float]) -> dict[str, Any]:
    """Write ``report.json`` and ``report.md`` (and plots) from the results under ``out``; return the JSON."""
    results = load_results(out, runs, seeds, config.base_per_seed)
    names = {r.name for r in runs}
    tables = []
    for table in config.tables:
        rows = [r for r in table.rows if r == "base" or r in names]
        if len([r for r in rows if r != "base"]) < 2 and table.name != "main":
            continue
        tables.append({"name": table.name, "title": table.title,
                       "rows": table_rows(config, rows, results, COLUMNS),
                       "probe": table_rows(config, [r for r in rows if r != "base"], results, PROBE_COLUMNS)})
    verdict = paired(results, "mfpo", "dpo", (*COLUMNS, *PROBE_COLUMNS)) if {"mfpo", "dpo"} <= names else {}
    base = results["base"]
    report = {
        "quick": quick, "seeds": list(seeds), "runs": [r.name for r in runs], "timings_s": dict(timings),
        "base": {"recall": _values(base, lambda m: m["captions"]["recall"]),
                 "chair_i": _values(base, lambda m: m["captions"]["chair_i"]),
                 "prior_hallucination": _values(base, lambda m: m["captions"]["prior_hallucination"]),
                 "sft": [b["sft"] for b in base]},
        "negatives_used": {n: results[n][0]["negatives_used"] for n in names},
        "tables": tables, "mfpo_vs_dpo": verdict,
        "plots": write_plots(config, out, names, seeds[0]),
        "config": json.loads(config.model_dump_json()),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(render_markdown(config, report, results), encoding="utf-8")
    return report


def render_markdown(config: TestbedConfig, report: Mapping[str, Any],
                    results: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """report.md: setup, base model, one table per paper table, MFPO vs DPO, the probe, plots, notes."""
    seeds = report["seeds"]
    lines = [f"# Hallucination testbed: {'--quick' if report['quick'] else 'full'} run",
             "",
             f"Seeds {seeds}; cells are mean ± half-width of the 95% Student-t interval over the seeds "
             "(no interval with one seed). Rates in percent. Timings (s): "
             + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()) + ".",
             ""]
    w = config.world
    priors = "; ".join(f"{p.partner} with {p.anchor}: {p.sft:.0%} of SFT scenes, {p.preference:.0%} preference, "
                       f"{p.test:.0%} held-out" for p in w.priors)
    palette = (", ".join(f"{k} {'/'.join(w.colors_of(k))}" for k in w.kinds) if w.kind_colors
               else f"{len(w.colors)} colours")
    lines += ["## Setup", "",
              f"- World: {len(w.kinds)} kinds ({palette}), "
              f"{w.min_groups}-{w.max_groups} kinds per scene, {w.image_size} px; priors: {priors}. "
              f"{w.sft_scenes} SFT scenes, {w.preference_scenes} preference items, {w.test_scenes} held-out scenes.",
              f"- Model: LLaVA-1.5 architecture, CLIP vision {config.model.vision_layers}x{config.model.vision_hidden} "
              f"(patch {config.model.patch_size}, {config.model.image_tokens} image tokens), Llama "
              f"{config.model.text_layers}x{config.model.text_hidden}; SFT from random weights, "
              f"{config.sft.vision_epochs} epochs of vision-tower pretraining"
              f"{' (then frozen)' if config.sft.freeze_vision_tower else ''}, {config.sft.epochs} epochs, "
              f"lr {config.sft.learning_rate}"
              + ("; one base model per seed." if config.base_per_seed else "; one base model for all seeds."),
              f"- Preference training: beta {config.train.beta}, lr {config.train.learning_rate}, batch "
              f"{config.train.batch_size} items, {config.train.epochs_per_stage} epoch(s) per stage, "
              f"{'LoRA' if config.train.lora else 'full fine-tuning of projector + LM (vision frozen)'}.",
              ""]
    base = report["base"]
    lines += ["## Base model (SFT)", "",
              f"- Caption recall on held-out scenes: {cell(base['recall'])}% (target >= 80).",
              f"- CHAIR_i: {cell(base['chair_i'])}%; prior hallucination (partner named while absent): "
              f"{cell(base['prior_hallucination'])}%.", ""]
    for table in report["tables"]:
        lines += [f"## {table['title']}", "", markdown_table(table["rows"], COLUMNS), ""]
        if table["probe"]:
            lines += ["Modality probe (trained minus base reward margins, in nats; preferences in %):", "",
                      markdown_table(table["probe"], PROBE_COLUMNS), ""]
    verdict = report["mfpo_vs_dpo"]
    if verdict:
        lines += ["## MFPO vs DPO (paired by seed: MFPO minus DPO)", "",
                  "| metric | difference | verdict |", "|---|---|---|"]
        for col, d in verdict.items():
            ci = "" if math.isnan(d["ci95"]) else f" ± {d['ci95']:.2f}"
            lines.append(f"| {col} | {d['mean']:+.2f}{ci} | {d['verdict']} |")
        lines.append("")
    if report["plots"]:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]] + [""]
    return "\n".join(lines)
