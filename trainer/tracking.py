"""Where a run's metrics go besides ``metrics.jsonl``: ``report_to`` = tensorboard | wandb | all | none.

TensorBoard writes ``OUTPUT/tb/`` (mirrored to an ``s3://`` output with the rest of the run);
Weights & Biases is imported only when chosen, and :func:`check_report_to` fails before any
work when it is chosen but not installed. A resumed run purges TensorBoard events after its
checkpoint's step and re-attaches to the same wandb run (its id derives from the output
location), so the curves of a resumed run read like those of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from trainer.config import TrainConfig


class Tracker(Protocol):
    """A metrics sink: numeric values at an optimizer step."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The float-valued metrics (the step, counts and stage names are not curves)."""
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def backends(config: TrainConfig) -> tuple[str, ...]:
    """The trackers ``report_to`` names, in order."""
    return {"none": (), "all": ("tensorboard", "wandb")}.get(config.report_to, (config.report_to,))


def check_report_to(config: TrainConfig) -> None:
    """Raise a ``ValueError`` saying what to install when a chosen tracker's package is missing."""
    for name, module in (("tensorboard", "tensorboard"), ("wandb", "wandb")):
        if name in backends(config):
            try:
                __import__(module)
            except ImportError:
                raise ValueError(f"report_to={config.report_to} needs the {module} package, which is not installed: "
                                 f"pip install {module}, or set report_to to "
                                 f"{' or '.join(b for b in ('tensorboard', 'none') if b != name)}") from None


class TensorBoardTracker:
    """``SummaryWriter`` on ``folder``; ``purge_step`` drops events after a resumed checkpoint."""

    def __init__(self, folder: Path, resume_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=resume_step + 1 if resume_step else None)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        for key, value in _numbers(metrics).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """One wandb run per output location (``resume="allow"``): a restarted run continues its curves."""

    def __init__(self, config: TrainConfig, output_uri: str, local: Path) -> None:
        import wandb

        run_id = os.environ.get("WANDB_RUN_ID") or hashlib.sha256(output_uri.encode()).hexdigest()[:16]
        name = config.run_name or output_uri.rstrip("/").rsplit("/", 1)[-1]
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "mfpo"), name=name, id=run_id,
                              resume="allow", dir=str(local), config=config.model_dump(mode="json"))

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self.run.log(_numbers(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """Every tracker of ``report_to`` behind one ``log``/``close``; none on processes other than the main one."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(metrics, step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


def open_trackers(config: TrainConfig, output_uri: str, local: Path, resume_step: int, main: bool) -> Trackers:
    """The run's trackers: ``local`` is the run folder (or an ``s3://`` output's staging folder)."""
    if not main:
        return Trackers([])
    chosen: list[Tracker] = []
    for name in backends(config):
        if name == "tensorboard":
            chosen.append(TensorBoardTracker(local / "tb", resume_step))
        else:
            chosen.append(WandbTracker(config, output_uri, local))
    return Trackers(chosen)
