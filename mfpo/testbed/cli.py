"""``mfpo testbed``: the hallucination testbed on this machine (issue 16). Imports nothing heavy until it runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def testbed(
    out: Annotated[Path, typer.Option("--out", help="Output folder (resumable: finished steps are skipped).")] = Path(
        "testbed"),
    config: Annotated[
        Path | None, typer.Option(help="TestbedConfig JSON (default: the built-in one, = configs/testbed.json).")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Only the quick subset (DPO vs MFPO, one seed).")] = False,
) -> None:
    """Train a tiny LLaVA from scratch on a procedural world with language priors, then DPO, MFPO, mDPO, AdaViP
    and MFPO's ablations from it; write report.md / report.json (CHAIR, POPE, the modality probe, 95% intervals).

    Progress goes to stderr; the last stdout line is a JSON summary (timings, base model, MFPO vs DPO)."""
    from pydantic import ValidationError

    from mfpo.testbed.config import TestbedConfig
    from mfpo.testbed.experiment import run_testbed

    try:
        cfg = TestbedConfig.model_validate_json(config.read_text()) if config else TestbedConfig()
    except (OSError, ValidationError, TypeError) as exc:
        typer.secho(f"error: --config {config}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    try:
        report = run_testbed(cfg, out, quick=quick)
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(f"report: {out / 'report.md'}")
    typer.echo(json.dumps({"timings_s": report["timings_s"], "base": {k: report["base"][k] for k in
                                                                      ("recall", "chair_i", "prior_hallucination")},
                           "mfpo_vs_dpo": report["mfpo_vs_dpo"]}))
