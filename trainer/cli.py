"""``mfpo train`` (also ``python -m trainer`` / ``accelerate launch -m trainer``)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer


def _weights(value: str) -> tuple[float, float, float]:
    parts = [float(p) for p in value.split(",")]
    if len(parts) != 3:
        raise typer.BadParameter("give three comma-separated weights w_t,w_i,w_m, e.g. 1,1,1")
    return (parts[0], parts[1], parts[2])


def read_location(location: str) -> bytes:
    """The bytes of a file given as a path, ``file://`` or ``s3://bucket/key`` URI (``--config``).

    Options that name locations are plain strings, never ``Path``: ``Path("s3://b/k")`` is
    ``s3:/b/k``, a local path."""
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    parts = urlsplit(location)
    if parts.scheme.lower() == "s3":
        from mfpo.storage.factory import open_store

        parent, _, name = location.rpartition("/")
        if not parts.netloc or not name or "/" not in parts.path:
            raise ValueError(f"{location!r}: give s3://bucket/key of a file")
        return open_store(parent).get(name)
    path = Path(url2pathname(parts.path)) if parts.scheme.lower() == "file" else Path(location).expanduser()
    return path.read_bytes()


def _console() -> logging.Logger:
    """The ``trainer`` logger on stderr (plan, eval results, checkpoints), unless the caller configured it."""
    log = logging.getLogger("trainer")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def train(
    dataset: Annotated[str, typer.Option(help="Dataset folder or s3://bucket/prefix (with dataset.jsonl).")],
    model: Annotated[str, typer.Option(help="LLaVA model folder (llava-hf layout) or hub id.")],
    output: Annotated[
        str, typer.Option(help="Output folder or s3://bucket/prefix: metrics.jsonl, tb/, checkpoints/, final/.")
    ],
    loss: Annotated[str | None, typer.Option(help="mfpo | dpo | mdpo | adavip (default mfpo).")] = None,
    negatives: Annotated[
        str | None, typer.Option(help="Rejected images to train on: auto (default: the loss's own: mfpo, mdpo, "
                                      "adavip) | mfpo | adavip | mdpo | mbpo (its answers too) | global.")
    ] = None,
    beta: Annotated[float | None, typer.Option(help="beta of the implicit reward (default 0.1).")] = None,
    eta: Annotated[float | None, typer.Option(help="Margin eta (MFPO eq. 7; mDPO's anchor delta).")] = None,
    weights: Annotated[str | None, typer.Option(help="w_t,w_i,w_m of MFPO's three terms (default 1,1,1).")] = None,
    curriculum: Annotated[str | None, typer.Option(help="easy-to-hard (default) | none.")] = None,
    lora: Annotated[
        bool | None, typer.Option("--lora/--full", help="LoRA adapters (default) or full fine-tuning.")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="At most N optimizer steps, spread over the curriculum stages.")
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate (default 2e-5).")] = None,
    lr_scheduler: Annotated[
        str | None, typer.Option(help="constant (default) | linear | cosine, after warmup.")
    ] = None,
    warmup_ratio: Annotated[
        float | None, typer.Option(help="Fraction of the steps warming the learning rate up from 0 (default 0).")
    ] = None,
    max_grad_norm: Annotated[
        float | None, typer.Option(help="Clip the gradient norm to this (default 1.0; 0: no clipping).")
    ] = None,
    report_to: Annotated[
        str | None, typer.Option(help="tensorboard (default) | wandb | all | none.")
    ] = None,
    eval_fraction: Annotated[
        float | None, typer.Option(help="Hold out this fraction of the items for evaluation (default 0).")
    ] = None,
    eval_steps: Annotated[
        int | None, typer.Option(help="Evaluate every N steps and after the last (default 0: after the last).")
    ] = None,
    eval_dataset: Annotated[
        str | None, typer.Option(help="A second dataset (folder or s3://) to evaluate on, instead of "
                                      "--eval-fraction.")
    ] = None,
    config: Annotated[
        str | None, typer.Option(help="JSON file (path or s3://bucket/key) of TrainConfig options; flags override.")
    ] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="Also write OUTPUT/merged/: LoRA merged, a plain transformers folder.")
    ] = False,
) -> None:
    """Align a LLaVA-class model with MFPO (or dpo / mdpo / adavip) on a generated dataset.

    Progress bars and the plan, eval results and checkpoints go to stderr; the last line on
    stdout is the run's summary (JSON). The run's last write is OUTPUT/summary.json (after
    final/ and, with --merge, merged/), so a job waiting on the run (``mfpo merge --wait``)
    sees a finished one."""
    from pydantic import ValidationError

    from mfpo.storage.base import StoreError
    from trainer.config import TrainConfig
    from trainer.data import DatasetError

    try:
        options = json.loads(read_location(config)) if config else {}
    except (OSError, ValueError, StoreError) as exc:  # a missing file or object, a store outage, not JSON
        typer.secho(f"error: --config {config}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    given = {"loss": loss, "negatives": negatives, "beta": beta, "eta": eta,
             "weights": _weights(weights) if weights else None,
             "curriculum": curriculum, "lora": lora, "max_steps": max_steps, "learning_rate": learning_rate,
             "lr_scheduler": lr_scheduler, "warmup_ratio": warmup_ratio, "max_grad_norm": max_grad_norm,
             "report_to": report_to, "eval_fraction": eval_fraction, "eval_steps": eval_steps}
    options |= {k: v for k, v in given.items() if v is not None}  # flags given override the file
    try:
        cfg = TrainConfig.model_validate(options)
    except (ValidationError, TypeError) as exc:
        typer.secho(f"error: invalid options: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    from tqdm.contrib.logging import logging_redirect_tqdm

    from trainer.loop import train as run

    try:
        with logging_redirect_tqdm(loggers=[_console()]):  # log lines above the progress bar, not through it
            summary = run(cfg, dataset, model, output, eval_dataset=eval_dataset)
    except (DatasetError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    from accelerate import PartialState

    if PartialState().is_main_process:
        if merge:
            from trainer.merge import merge_model

            summary["merged"] = merge_model(summary["final"], f"{summary['output']}/merged", base=model)
        from mfpo.storage.factory import open_store
        from trainer.merge import RUN_SUMMARY

        open_store(summary["output"], create_bucket=True).put(RUN_SUMMARY, json.dumps(summary).encode(),
                                                              "application/json")
    typer.echo(json.dumps(summary))


def merge(
    adapter: Annotated[str, typer.Option(help="A run's final/ (LoRA adapter or full model): folder or s3://.")],
    out: Annotated[str, typer.Option(help="Output folder or s3://bucket/prefix of the merged model.")],
    base: Annotated[
        str | None, typer.Option(help="Base model folder or hub id (default: the adapter's base_model_name_or_path).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="auto (the base's) | float32 | bfloat16 | float16.")] = "auto",
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for ADAPTER's run to finish (its summary.json); 0: no wait.")
    ] = 0.0,
) -> None:
    """Write a trained model as a plain transformers folder (LoRA merged) for transformers, vLLM, lmms-eval."""
    from pydantic import ValidationError

    from trainer.merge import MergeConfig, MergeError, merge_model

    try:
        config = MergeConfig.model_validate({"dtype": dtype, "wait_s": wait})
        written = merge_model(adapter, out, base=base, config=config)
    except (ValidationError, MergeError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {written}")


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(train)
    app()
