"""``mfpo train`` (also ``python -m trainer`` / ``accelerate launch -m trainer``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def _weights(value: str) -> tuple[float, float, float]:
    parts = [float(p) for p in value.split(",")]
    if len(parts) != 3:
        raise typer.BadParameter("give three comma-separated weights w_t,w_i,w_m, e.g. 1,1,1")
    return (parts[0], parts[1], parts[2])


def train(
    dataset: Annotated[str, typer.Option(help="Dataset folder or s3://bucket/prefix (with dataset.jsonl).")],
    model: Annotated[str, typer.Option(help="LLaVA model folder (llava-hf layout) or hub id.")],
    output: Annotated[Path, typer.Option(help="Output folder: metrics.jsonl, tb/, checkpoints/, final/.")],
    loss: Annotated[str | None, typer.Option(help="mfpo | dpo | mdpo | adavip (default mfpo).")] = None,
    beta: Annotated[float | None, typer.Option(help="beta of the implicit reward (default 0.1).")] = None,
    eta: Annotated[float | None, typer.Option(help="Margin eta (MFPO eq. 7; mDPO's anchor delta).")] = None,
    weights: Annotated[str | None, typer.Option(help="w_t,w_i,w_m of MFPO's three terms (default 1,1,1).")] = None,
    curriculum: Annotated[str | None, typer.Option(help="easy-to-hard (default) | none.")] = None,
    lora: Annotated[
        bool | None, typer.Option("--lora/--full", help="LoRA adapters (default) or full fine-tuning.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
    config: Annotated[Path | None, typer.Option(help="JSON file of TrainConfig options; flags override.")] = None,
) -> None:
    """Align a LLaVA-class model with MFPO (or dpo / mdpo / adavip) on a generated dataset."""
    from pydantic import ValidationError

    from trainer.config import TrainConfig
    from trainer.data import DatasetError
    from trainer.loop import train as run

    options = json.loads(config.read_text()) if config else {}
    given = {"loss": loss, "beta": beta, "eta": eta, "weights": _weights(weights) if weights else None,
             "curriculum": curriculum, "lora": lora, "max_steps": max_steps}
    options |= {k: v for k, v in given.items() if v is not None}  # flags given override the file
    try:
        cfg = TrainConfig.model_validate(options)
    except (ValidationError, TypeError) as exc:
        typer.secho(f"error: invalid options: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    try:
        summary = run(cfg, dataset, model, output)
    except (DatasetError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary))


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(train)
    app()
