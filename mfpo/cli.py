"""The ``mfpo`` command line: generate, export, synth, keywords."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from mfpo.eval.cli import eval_app
from mfpo.testbed.cli import testbed

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


class Interrupted(BaseException):
    """A signal asked the run to stop (a BaseException, like KeyboardInterrupt: no ``except Exception`` eats it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (``kill``, ``timeout``, Kubernetes) into :class:`Interrupted` in this process while inside.

    Unwinding then runs every cleanup on the way out: the pool's workers are terminated
    (:func:`mfpo.pipeline.embedded.terminate_workers`) and half-written dataset files removed. A worker forked
    while the handler is installed inherits it; there SIGTERM ends the process at once, as by default.
    """
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resume_command() -> str:
    """The command line this process was started with, to run again (``mfpo generate ...``)."""
    return shlex.join(["mfpo", *sys.argv[1:]])


def generate_options(
    file_options: dict[str, Any],
    *,
    top_k: int | None = None,
    regions: str | None = None,
    noise_step: int | None = None,
    schedule: str | None = None,
    seed: int | None = None,
    grounding_model: Path | None = None,
    sam_checkpoint: Path | None = None,
    sam_type: str | None = None,
    device: str | None = None,
    negatives: str | None = None,
    clip_model: Path | None = None,
    inpainting_model: Path | None = None,
    policy_model: Path | None = None,
) -> dict[str, Any]:
    """GenerateConfig options: the ``--config`` file's, overridden only by the flags actually given (not None).

    ``--device`` applies to the models given on the command line (grounding and SAM), or to those of the file.
    ``negatives``: comma-separated kinds (``mfpo,mdpo``); ``--inpainting-model`` also selects the diffusers
    inpainter for adavip.
    """
    options = json.loads(json.dumps(file_options))  # a deep copy: the caller's dict is left alone

    def section(*path: str) -> dict[str, Any]:
        node = options
        for key in path:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        return node

    if top_k is not None:
        section("keywords")["top_k"] = top_k
    if regions is not None:
        section("regions")["mode"] = regions
    if noise_step is not None:
        section("perturbation")["noise_step"] = noise_step
    if schedule is not None:
        section("perturbation")["schedule"] = schedule
    if seed is not None:
        options["seed"] = seed
    if grounding_model is not None:
        section("regions", "grounding")["model_path"] = str(grounding_model)
    if sam_checkpoint is not None:
        section("regions", "sam")["checkpoint"] = str(sam_checkpoint)
    if sam_type is not None:
        section("regions", "sam")["sam_type"] = sam_type
    if device is not None:
        for model in ("grounding", "sam"):
            if isinstance(options.get("regions"), dict) and isinstance(options["regions"].get(model), dict):
                options["regions"][model]["device"] = device
    if negatives is not None:
        section("negatives")["kinds"] = [k.strip() for k in negatives.split(",") if k.strip()]
    if clip_model is not None:
        section("negatives", "adavip", "clip")["model_path"] = str(clip_model)
    if inpainting_model is not None:
        section("negatives", "adavip", "diffusers")["model_path"] = str(inpainting_model)
        section("negatives", "adavip")["inpainter"] = "diffusers"
    if policy_model is not None:
        section("negatives", "mbpo")["model_path"] = str(policy_model)
    return options


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


_SEE_OPTIONS = "default: --config's, else `mfpo options`"


@app.command()
def generate(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="JSONL or Parquet file of items.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created; re-runs resume).")],
    regions: Annotated[
        RegionModeChoice | None, typer.Option(help=f"Region provider: regions.mode ({_SEE_OPTIONS}).")
    ] = None,
    noise_step: Annotated[
        int | None, typer.Option(help=f"Diffusion timestep t of the noise: perturbation.noise_step ({_SEE_OPTIONS}).")
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(help=f"Keywords kept per item: keywords.top_k ({_SEE_OPTIONS}).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help=f"Run seed: seed ({_SEE_OPTIONS}).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (0 = one per core).")] = 0,
    chunk_size: Annotated[
        int, typer.Option(min=1, max=4096, help="Items per chunk: the unit a worker runs the stages on and a re-run "
                          "resumes by (keep it when resuming).")
    ] = 16,
    input_format: Annotated[
        InputFormat | None, typer.Option("--format", help="Force the input format (default: detect).")
    ] = None,
    schedule: Annotated[
        str | None, typer.Option(help=f"DDPM beta schedule: perturbation.schedule ({_SEE_OPTIONS}).")
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="JSON file of GenerateConfig options (`mfpo options` lists them); only the "
                     "flags given override it."),
    ] = None,
    gallery: Annotated[bool, typer.Option(help="Write gallery.html.")] = True,
    grounding_model: Annotated[
        Path | None, typer.Option(help="GroundingDINO or OWLv2 transformers folder (grounded regions).")
    ] = None,
    sam_checkpoint: Annotated[Path | None, typer.Option(help="segment-anything checkpoint (grounded regions).")] = None,
    sam_type: Annotated[
        SamTypeChoice | None,
        typer.Option(help=f"Architecture of --sam-checkpoint: regions.sam.sam_type ({_SEE_OPTIONS})."),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Device of the grounding and SAM models: auto | cpu | cuda | cuda:N "
                                 f"(regions.grounding.device, regions.sam.device; {_SEE_OPTIONS}).")
    ] = None,
    negatives: Annotated[
        str | None,
        typer.Option(help="Rejected-image constructors, comma-separated, the first one's image is rejected_image: "
                     "mfpo | adavip | mdpo | mbpo | global (negatives.kinds; default mfpo). README: method table."),
    ] = None,
    clip_model: Annotated[
        Path | None, typer.Option(help="CLIP transformers folder: AdaViP's eq. 9 choice (negatives.adavip.clip).")
    ] = None,
    inpainting_model: Annotated[
        Path | None, typer.Option(help="diffusers inpainting pipeline folder: AdaViP's object removal (else the "
                                  "classical fill; negatives.adavip.diffusers).")
    ] = None,
    policy_model: Annotated[
        Path | None, typer.Option(help="LLaVA-1.5 transformers folder: the policy MBPO attacks and answers with "
                                  "(negatives.mbpo.model_path).")
    ] = None,
) -> None:
    """Make the MFPO image-preference dataset for INPUT into OUT.

    With --grounding-model and --sam-checkpoint, `--regions auto` maps keywords to regions with
    annotations first, then grounding + SAM, then the whole image. SIGTERM or Ctrl-C stops the workers
    and keeps every finished chunk: the same command resumes. Exits 1 when no row became a record.
    """
    from pydantic import ValidationError
    from tqdm import tqdm

    from mfpo.pipeline.config import GenerateConfig
    from mfpo.pipeline.embedded import run_generate

    if not input_path.is_file():
        _fail(f"input file {input_path} does not exist")
    file_options: dict[str, Any] = {}
    if config_file is not None:
        try:
            file_options = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            _fail(f"cannot read config {config_file}: {exc}")
        if not isinstance(file_options, dict):
            _fail(f"config {config_file} must hold a JSON object of options, got {type(file_options).__name__}")
    options = generate_options(
        file_options, top_k=top_k, regions=regions.value if regions else None, noise_step=noise_step,
        schedule=schedule, seed=seed, grounding_model=grounding_model, sam_checkpoint=sam_checkpoint,
        sam_type=sam_type.value if sam_type else None, device=device, negatives=negatives, clip_model=clip_model,
        inpainting_model=inpainting_model, policy_model=policy_model,
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
    if any(k in ("adavip", "mbpo") for k in config.negatives.kinds):
        from mfpo.negatives.models import load_models

        try:  # likewise the constructors' CLIP / inpainter / policy
            load_models(config.negatives)
        except (OSError, ValueError, RuntimeError) as exc:
            _fail(f"cannot load the negatives' models: {exc}")
    total = _count_rows(input_path)
    n_workers = workers or os.cpu_count() or 1
    try:
        with stop_on_sigterm(), tqdm(total=total, unit="item", desc="generate", file=sys.stderr,
                                     dynamic_ncols=True) as bar:
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
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        typer.secho(
            f"stopped by {signal.Signals(signum).name}: the workers are stopped and every finished chunk is kept in "
            f"{out} (nothing half-written). Resume with the same command:\n  {resume_command()}",
            fg=typer.colors.YELLOW, err=True,
        )
        raise typer.Exit(code=128 + signum) from None
    s = summary.as_dict()
    typer.echo(
        f"done {s['done']}, resumed {s['resumed']}, failed {s['failed']}, "
        f"fallback rate {s['fallback_rate']:.1%}, {s['items_per_second']:.2f} items/s "
        f"({n_workers} workers, {s['seconds']:.1f} s)"
    )
    if not s["records"]:
        what = f"all {s['failed']} rows of {input_path} failed" if s["failed"] else f"{input_path} has no rows"
        reasons = f" (by stage: {s['failure_reasons']}); the reasons are in {out / 'failures.jsonl'}" if s["failed"] \
            else ""
        typer.secho(f"error: no records: {what}{reasons}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
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
    negatives: Annotated[
        str | None, typer.Option(help="Rejected images to export: mfpo | adavip | mdpo | mbpo (its answers too) | "
                                      "global (default: each record's rejected_image, the job's first kind).")
    ] = None,
) -> None:
    """Export a generated dataset for a trainer: TRL vision DPO, RLAIF-V, HF datasets Parquet, or LLaMA-Factory.

    A dataset without records is refused (exit 2): Hugging Face datasets cannot load a zero-row Parquet.
    """
    from mfpo.exporters import export_dataset

    if not (dataset_dir / "dataset.jsonl").is_file():
        _fail(f"{dataset_dir} has no dataset.jsonl: run `mfpo generate` first")
    try:
        written = export_dataset(dataset_dir, fmt.value, dest, negatives=negatives)
    except (FileNotFoundError, ValueError) as exc:  # EmptyDatasetError is a ValueError
        _fail(str(exc))
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
    """Show the ranked keywords of a text (MFPO sec. 3.1), or "(no keywords)".

    The phrase model (MiniLM, torch) loads only when the text has candidate noun phrases.
    """
    from mfpo.keywords import KeywordConfig, extract_keywords

    found = extract_keywords(text, KeywordConfig(top_k=top_k))
    for kw in found:
        typer.echo(f"{kw.score:.4f}\t{kw.text}")
    if not found:
        typer.echo("(no keywords)")


@app.command()
def options(
    json_schema: Annotated[
        bool, typer.Option("--json-schema", help="Print the JSON schema of the --config file instead.")
    ] = False,
) -> None:
    """Every option a `mfpo generate --config` file takes: name, type, default and help, from GenerateConfig.

    Nested options are dotted: `keywords.top_k` is `{"keywords": {"top_k": 3}}` in the file.
    """
    from mfpo.options import list_options
    from mfpo.pipeline.config import GenerateConfig

    if json_schema:
        typer.echo(json.dumps(GenerateConfig.model_json_schema(), indent=2))
        return
    typer.echo(format_options_table(list_options(GenerateConfig)))


def format_options_table(rows: list[Any], width: int | None = None) -> str:
    """A plain-text table of :class:`mfpo.options.OptionInfo` rows, help wrapped to the terminal width."""
    import shutil
    import textwrap

    width = width or shutil.get_terminal_size((120, 24)).columns
    header = ("OPTION", "TYPE", "DEFAULT", "HELP")
    cells = [header] + [(r.name, r.type, r.default, r.help) for r in rows]
    caps = (44, 24, 10)
    widths = [min(cap, max(len(c[i]) for c in cells)) for i, cap in enumerate(caps)]
    help_width = max(30, width - sum(widths) - 2 * len(widths))
    lines = []
    for name, type_, default, help_ in cells:
        left = [name, type_, default]
        wrapped = textwrap.wrap(help_, help_width) or [""]
        overflow = any(len(v) > w for v, w in zip(left, widths, strict=True))
        if overflow:  # a long cell gets its own line; the help follows, aligned
            lines.append("  ".join(left))
            lines.extend(" " * (sum(widths) + 2 * len(widths)) + w for w in wrapped)
            continue
        prefix = "  ".join(v.ljust(w) for v, w in zip(left, widths, strict=True)) + "  "
        lines.append(prefix + wrapped[0])
        lines.extend(" " * len(prefix) + w for w in wrapped[1:])
    return "\n".join(line.rstrip() for line in lines)


models_app = typer.Typer(no_args_is_help=True, help="Model files for the grounded region stage.")
app.add_typer(models_app, name="models")
app.add_typer(eval_app, name="eval")
app.command("testbed")(testbed)


@models_app.command("tiny")
def models_tiny(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the tiny models into.")],
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Tiny random-weight GroundingDINO, OWLv2 and SAM (vit_tiny), and the rejected-image constructors' CLIP and
    Stable Diffusion inpainting (AdaViP), for offline smoke tests."""
    from mfpo.models.tiny import write_tiny_models, write_tiny_negative_models

    paths = write_tiny_models(out, seed=seed) | write_tiny_negative_models(out, seed=seed)
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
