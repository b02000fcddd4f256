"""The ``mfpo`` command line: generate, export, synth, keywords."""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from mfpo.eval.cli import eval_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Modality-fair preference data (MFPO): rejected images that differ only where the answer looks.",
)


class RegionModeChoice(str, Enum):
    annotations = "annotations"
    grounded = "grounded"
    global_ = "global"
    random = "random"
    auto = "auto"


class SamTypeChoice(str, Enum):
    vit_h = "vit_h"
    vit_l = "vit_l"
    vit_b = "vit_b"
    vit_tiny = "vit_tiny"


class ExportFormat(str, Enum):
    trl = "trl"
    rlaifv = "rlaifv"
    hf = "hf"
    llamafactory = "llamafactory"


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
    chunk_size: Annotated[
        int, typer.Option(min=1, max=4096, help="Items per chunk: the unit a worker runs the stages on and a re-run "
                          "resumes by (keep it when resuming).")
    ] = 16,
    input_format: Annotated[
        InputFormat | None, typer.Option("--format", help="Force the input format (default: detect).")
    ] = None,
    schedule: Annotated[str, typer.Option(help="DDPM beta schedule.")] = "linear",
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="JSON file of GenerateConfig options; flags given override it."),
    ] = None,
    gallery: Annotated[bool, typer.Option(help="Write gallery.html.")] = True,
    grounding_model: Annotated[
        Path | None, typer.Option(help="GroundingDINO or OWLv2 transformers folder (grounded regions).")
    ] = None,
    sam_checkpoint: Annotated[Path | None, typer.Option(help="segment-anything checkpoint (grounded regions).")] = None,
    sam_type: Annotated[SamTypeChoice, typer.Option(help="Architecture of --sam-checkpoint.")] = SamTypeChoice.vit_h,
    device: Annotated[str, typer.Option(help="Device of the models: auto | cpu | cuda | cuda:N.")] = "auto",
) -> None:
    """Make the MFPO image-preference dataset for INPUT into OUT.

    With --grounding-model and --sam-checkpoint, `--regions auto` maps keywords to regions with
    annotations first, then grounding + SAM, then the whole image.
    """
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
    if grounding_model is not None:
        options["regions"].setdefault("grounding", {}).update(model_path=str(grounding_model), device=device)
    if sam_checkpoint is not None:
        options["regions"].setdefault("sam", {}).update(
            checkpoint=str(sam_checkpoint), sam_type=sam_type.value, device=device
        )
    try:
        config = GenerateConfig.model_validate(options)
    except (ValidationError, ValueError, TypeError) as exc:
        _fail(f"invalid options: {exc}")
    if config.regions.models_configured:
        from mfpo.pipeline.resources import build_resources

        try:  # load the models now: a bad path or a wrong --sam-type is an error at start-up
            build_resources(config.regions)
        except (OSError, ValueError, RuntimeError) as exc:
            _fail(str(exc))
    total = _count_rows(input_path)
    n_workers = workers or os.cpu_count() or 1
    with tqdm(total=total, unit="item", desc="generate", file=sys.stderr, dynamic_ncols=True) as bar:
        summary = run_generate(
            input_path,
            out,
            config,
            input_format=input_format.value if input_format else None,
            workers=n_workers,
            chunk_size=chunk_size,
            progress=bar.update,
            gallery=gallery,
        )
    s = summary.as_dict()
    typer.echo(
        f"done {s['done']}, resumed {s['resumed']}, failed {s['failed']}, "
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
    """Export a generated dataset for a trainer: TRL vision DPO, RLAIF-V, HF datasets Parquet, or LLaMA-Factory."""
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


models_app = typer.Typer(no_args_is_help=True, help="Model files for the grounded region stage.")
app.add_typer(models_app, name="models")
app.add_typer(eval_app, name="eval")


@models_app.command("tiny")
def models_tiny(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the tiny models into.")],
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Tiny random-weight GroundingDINO, OWLv2 and SAM (vit_tiny) for offline smoke tests."""
    from mfpo.models.tiny import write_tiny_models

    paths = write_tiny_models(out, seed=seed)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")
    typer.echo(
        f"try: mfpo generate ITEMS.jsonl --out OUT --regions grounded --grounding-model {paths['grounding_dino']} "
        f"--sam-checkpoint {paths['sam']} --sam-type vit_tiny"
    )


@models_app.command("tiny-llava")
def models_tiny_llava(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the tiny LLaVA into.")],
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    next_: Annotated[bool, typer.Option("--next", help="LLaVA-NeXT (v1.6, any-resolution) instead of 1.5.")] = False,
) -> None:
    """Tiny random-weight LLaVA-1.5 or LLaVA-NeXT (model, processor, chat template) for offline smoke tests."""
    from mfpo.models.tiny_llava import write_tiny_llava, write_tiny_llava_next

    typer.echo((write_tiny_llava_next if next_ else write_tiny_llava)(out, seed=seed))


def _add_plugin_commands() -> None:
    """Commands registered by the platform's shells (``mfpo serve``, ``mfpo worker``) via entry points."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="mfpo.commands"):
        try:
            app.command(ep.name)(ep.load())
        except ImportError as exc:  # an extra that is not installed: the command says so
            message = f"`mfpo {ep.name}` needs an extra that is not installed ({exc.name}): pip install 'mfpo[...]'"

            def missing(message: str = message) -> None:
                _fail(message)

            app.command(ep.name, help=message)(missing)


_add_plugin_commands()


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no per-load bars between our own output
    app()


if __name__ == "__main__":
    main()
