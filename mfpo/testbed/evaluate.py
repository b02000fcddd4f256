"""Score one model on the held-out world: captions (CHAIR), POPE, short answers and the modality probe.

:class:`EvalSet` is built once per world (test scenes, POPE questions, colour / count questions, the probe's
preference dataset) and :func:`evaluate_model` scores a model folder on it with :mod:`mfpo.eval`'s own
machinery: answers by :class:`mfpo.eval.hf_runner.HFLlavaRunner` (greedy, the prompt as the trainer builds
it), the probe by :func:`mfpo.eval.probe.run_probe` (the trainer's own log-probs; MFPO Fig. 1: text margin,
image margin, preference under a destroyed image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mfpo.testbed.config import EvalConfig, WorldConfig
from mfpo.testbed.metrics import (
    PopeQuestion,
    answer_accuracy,
    attribute_questions,
    caption_metrics,
    pope_metrics,
    pope_questions,
)
from mfpo.testbed.world import CAPTION_QUESTION, Question, WorldScene, cooccurrence, kind_frequency, scenes


@dataclass
class EvalSet:
    """Everything a model is scored on, built once per world."""

    world: WorldConfig
    test: list[WorldScene]
    images: dict[str, Image.Image]
    pope: list[PopeQuestion]
    attributes: list[Question]
    probe_dataset: Path

    @classmethod
    def build(cls, world: WorldConfig, config: EvalConfig, probe_dataset: Path) -> EvalSet:
        test = list(scenes(world, "test"))
        pope = pope_questions(test, world, kind_frequency(world), cooccurrence(world))
        return cls(world, test, {s.id: Image.fromarray(s.image) for s in test}, pope,
                   attribute_questions(test, world, config.attribute_questions), probe_dataset)

    def summary(self) -> dict[str, Any]:
        return {"test_scenes": len(self.test), "pope_questions": len(self.pope),
                "attribute_questions": len(self.attributes),
                "prior_cases": sum(len(s.prior_absent) for s in self.test)}


def _answers(runner: Any, requests: Sequence[Any], batch: int, max_new_tokens: int) -> list[str]:
    from mfpo.eval.config import GenerationConfig

    config = GenerationConfig(batch_size=batch, max_new_tokens=max_new_tokens)
    out: list[str] = []
    for start in range(0, len(requests), batch):
        out += runner.generate(requests[start:start + batch], config)
    return out


def evaluate_model(model_dir: str, evalset: EvalSet, config: EvalConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, probe rows) of the model (a folder, or an adapter folder) on ``evalset``.

    metrics: ``captions`` (chair_s, chair_i, recall, length, prior_hallucination), ``pope`` (per split and
    mean), ``answers`` (colour / count accuracy), ``probe`` (:func:`mfpo.eval.probe.summarize_probe`), and
    ``examples`` (the first five captions next to the truth).
    """
    from mfpo.eval.config import ModelSpec, ProbeConfig
    from mfpo.eval.hf_runner import HFLlavaRunner
    from mfpo.eval.probe import load_probe_items, run_probe, summarize_probe
    from mfpo.eval.runner import GenerationRequest

    runner = HFLlavaRunner.load(ModelSpec(model=model_dir, device="cpu", dtype="float32"))
    images = evalset.images
    captions = _answers(runner, [GenerationRequest(s.id, CAPTION_QUESTION, images[s.id]) for s in evalset.test],
                        config.batch_size, config.caption_tokens)
    pope = _answers(runner, [GenerationRequest(q.id, q.question, images[q.scene]) for q in evalset.pope],
                    config.batch_size, config.answer_tokens)
    attrs = _answers(runner, [GenerationRequest(f"{q.kind}/{k}", q.question, images[q.scene])
                              for k, q in enumerate(evalset.attributes)], config.batch_size, config.answer_tokens)
    probe_config = ProbeConfig(batch_size=config.batch_size, noise_step=config.probe_noise_step,
                               limit=config.probe_items)
    items = load_probe_items(evalset.probe_dataset, probe_config)
    rows = run_probe(runner.model, runner.processor, runner.device, items, probe_config)
    metrics = {
        "captions": caption_metrics(captions, evalset.test, evalset.world),
        "pope": pope_metrics(evalset.pope, pope),
        "answers": answer_accuracy(evalset.attributes, attrs) if evalset.attributes else {},
        "probe": summarize_probe(rows),
        "examples": [{"truth": s.caption, "caption": c} for s, c in zip(evalset.test[:5], captions, strict=False)],
    }
    return metrics, rows
