"""The ``mfpo`` command line: generate, export, synth, keywords."""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Modality-fair preference data (MFPO): rejected images that differ only where the answer looks.",
)


class RegionModeChoice(str, Enum):
    annotations = "annotations"
    global_ = "global"
    random = "random"
    auto = "auto"


class ExportFormat(str, Enum):
    trl = "trl"
    rlaifv = "rlaifv"
    hf = "hf"


class InputFormat(str, Enum):
    native = "native"
    rlhfv = "rlhfv"
    rlaifv = "rlaifv"
    trl = "trl"
    vlfeedback = "vlfeedback"


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _count_rows(path: Path) -> int | None:
    """Rows in a JSONL or Parquet input, for the progress bar (None if unknown)."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return None


@app.command()
def generate(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="JSONL or Parquet file of items.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created; re-runs resume).")],
    regions: Annotated[RegionModeChoice, typer.Option(help="Region provider.")] = RegionModeChoice.auto,
    noise_step: Annotated[int, typer.Option(help="Diffusion timestep t of the noise.")] = 500,
    top_k: Annotated[int, typer.Option(help="Keywords kept per item (top-K of the PageRank).")] = 3,
    seed: Annotated[int, typer.Option(help="Run seed.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes (0 = one per core).")] = 0,
    input_format: Annotated[
        InputFormat | None, typer.Option("--format", help="Force the input format (default: detect).")
    ] = None,
    schedule: Annotated[str, typer.Option(help="DDPM beta schedule.")] = "linear",
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="JSON file of GenerateConfig options; flags given override it."),
    ] = None,
    gallery: Annotated[bool, typer.Option(help="Write gallery.html.")] = True,
) -> None:
    """Make the MFPO image-preference dataset for INPUT into OUT."""
    from pydantic import ValidationError
    from tqdm import tqdm

    from mfpo.pipeline.config import GenerateConfig
    from mfpo.pipeline.embedded import run_generate

    if not input_path.is_file():
        _fail(f"input file {input_path} does not exist")
    options: dict[str, Any] = {}
    if config_file is not None:
        try:
            options = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            _fail(f"cannot read config {config_file}: {exc}")
    options.setdefault("keywords", {})["top_k"] = top_k
    options.setdefault("regions", {})["mode"] = regions.value
    options.setdefault("perturbation", {}).update(noise_step=noise_step, schedule=schedule)
    options["seed"] = seed
    try:
        config = GenerateConfig.model_validate(options)
    except (ValidationError, ValueError, TypeError) as exc:
        _fail(f"invalid options: {exc}")
    total = _count_rows(input_path)
    n_workers = workers or os.cpu_count() or 1
    with tqdm(total=total, unit="item", desc="generate", file=sys.stderr, dynamic_ncols=True) as bar:
        summary = run_generate(
            input_path,
            out,
            config,
            input_format=input_format.value if input_format else None,
            workers=n_workers,
            progress=bar.update,
            gallery=gallery,
        )
    s = summary.as_dict()
    typer.echo(
        f"done {s['done']}, resumed {s['skipped']}, failed {s['failed']}, "
        f"fallback rate {s['fallback_rate']:.1%}, {s['items_per_second']:.2f} items/s "
        f"({n_workers} workers, {s['seconds']:.1f} s)"
    )
    typer.echo(f"dataset: {out / 'dataset.jsonl'} and {out / 'dataset.parquet'}")
    if gallery:
        typer.echo(f"gallery: {out / 'gallery.html'}")
    if s["failed"]:
        typer.echo(f"failures: {out / 'failures.jsonl'} ({s['failure_reasons']})")


@app.command()
def export(
    dataset_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Folder made by `mfpo generate`.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Target layout.")],
    dest: Annotated[Path, typer.Option("--out", help="Output path (file or folder, per format).")],
) -> None:
    """Export a generated dataset for a trainer: TRL vision DPO, RLAIF-V, or HF datasets Parquet."""
    from mfpo.exporters import export_dataset

    if not (dataset_dir / "dataset.jsonl").is_file():
        _fail(f"{dataset_dir} has no dataset.jsonl: run `mfpo generate` first")
    written = export_dataset(dataset_dir, fmt.value, dest)
    typer.echo(f"wrote {written}")


@app.command()
def synth(
    n: Annotated[int, typer.Option("--n", help="Number of scenes.")] = 200,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("synth"),
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    size: Annotated[int, typer.Option(help="Image width and height in pixels.")] = 512,
) -> None:
    """Procedural scenes with exact annotations and hallucinated rejected answers."""
    from mfpo.synth import SynthConfig, generate_scenes

    path = generate_scenes(SynthConfig(n=n, seed=seed, width=size, height=size), out)
    typer.echo(f"wrote {n} items to {path}")


@app.command()
def keywords(
    text: Annotated[str, typer.Argument(help="An answer to rank keywords of.")],
    top_k: Annotated[int, typer.Option(help="Keywords to show.")] = 5,
) -> None:
    """Show the ranked keywords of a text (MFPO sec. 3.1)."""
    from mfpo.keywords import KeywordConfig, extract_keywords

    for kw in extract_keywords(text, KeywordConfig(top_k=top_k)):
        typer.echo(f"{kw.score:.4f}\t{kw.text}")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
