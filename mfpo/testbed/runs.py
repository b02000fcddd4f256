"""One testbed run: preference-train the base with a :class:`~mfpo.testbed.config.RunSpec`, then score it.

Training is ``mfpo train``'s own loop (:func:`trainer.loop.train`) on a dataset made by ``mfpo generate``,
with the shared :attr:`TestbedConfig.train <mfpo.testbed.config.TestbedConfig.train>` settings and the run's
loss, weights, margin, curriculum and seed. Scoring is :func:`mfpo.testbed.evaluate.evaluate_model`, plus
the implicit rewards of training against the base (:func:`mfpo.eval.probe.compare_probes`: how much the
text and the image margins moved, MFPO Fig. 1a / 2). A run whose ``result.json`` exists is not redone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mfpo.testbed.config import RunSpec, TestbedConfig
from mfpo.testbed.data import SIBLINGS
from mfpo.testbed.evaluate import EvalSet, evaluate_model

RESULT = "result.json"
PROBE = "probe.jsonl"


def trainer_negatives(spec: RunSpec) -> str:
    """``TrainConfig.negatives`` of the run: the dataset column it reads (global / random runs read the ``mfpo``
    column of their own dataset; dpo reads none)."""
    if spec.loss == "dpo":
        return "auto"
    return spec.negatives if spec.negatives in SIBLINGS else "mfpo"


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def score(model_dir: str, evalset: EvalSet, config: TestbedConfig, out: Path,
          base_probe: Sequence[dict[str, Any]] | None) -> dict[str, Any]:
    """Score ``model_dir``; writes ``out/probe.jsonl`` and returns the metrics (with ``probe_vs_base``)."""
    from mfpo.eval.probe import compare_probes

    started = time.perf_counter()
    metrics, rows = evaluate_model(model_dir, evalset, config.eval)
    write_rows(out / PROBE, rows)
    if base_probe is not None:
        metrics["probe_vs_base"] = compare_probes(base_probe, rows)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def train_and_score(spec: RunSpec, seed: int, config: TestbedConfig, dataset: Path, base: Path, evalset: EvalSet,
                    base_probe: Sequence[dict[str, Any]], out: Path) -> dict[str, Any]:
    """Run ``spec`` with ``seed`` from the base model folder ``base`` on ``dataset``; write and return
    ``out/result.json`` (spec, negatives used, training summary and metrics lines, scores, timings)."""
    from trainer.loop import train

    done = out / RESULT
    if done.is_file():
        return dict(json.loads(done.read_text()))
    out.mkdir(parents=True, exist_ok=True)
    settings = config.train.model_copy(update={"loss": spec.loss, "weights": spec.weights, "eta": spec.eta,
                                               "curriculum": spec.curriculum, "seed": seed,
                                               "negatives": trainer_negatives(spec)})
    started = time.perf_counter()
    summary = train(settings, str(dataset), str(base), out / "train")
    train_seconds = time.perf_counter() - started
    metrics = score(summary["final"], evalset, config, out, base_probe)
    result = {"run": spec.name, "seed": seed, "spec": spec.model_dump(mode="json"),
              "negatives_used": spec.negatives, "dataset": dataset.name,
              "train": {"steps": summary["steps"], "stages": summary["stages"], "last": summary["last"],
                        "seconds": round(train_seconds, 2)},
              "metrics": metrics}
    done.write_text(json.dumps(result, indent=1) + "\n")
    return result
