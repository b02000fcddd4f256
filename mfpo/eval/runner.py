"""Answers for a benchmark's prompts: a backend-neutral runner interface and the resumable loop around it.

A backend implements :class:`AnswerRunner` (``generate(requests) -> answers``, same order);
:class:`mfpo.eval.hf_runner.HFLlavaRunner` is the transformers one, and a vLLM backend can
plug in later without touching the loop. :func:`generate_answers` reads the prompts, skips
every question id already in the output file (a killed run resumes where it stopped; a
half-written last line is dropped), loads the images, calls the runner batch by batch and
appends one JSON line per answer, flushed per batch, in LLaVA's answer-file layout::

    {"question_id": ..., "prompt": question, "text": answer, "model_id": name, <the prompt's other fields>}

so POPE labels, AMBER ids, image ids and LLaVA-Bench categories travel with the answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from mfpo.eval.config import GenerationConfig
from mfpo.eval.prompts import BenchmarkPrompt, answer_fields, load_prompt_image
from mfpo.eval.rows import INDEX_KEY, RowsError
from mfpo.images import ImageError


@dataclass(frozen=True)
class GenerationRequest:
    """One question to answer about one RGB image."""

    id: str
    question: str
    image: Image.Image


class AnswerRunner(Protocol):
    """A generation backend: answers for a batch of requests, in the same order."""

    name: str

    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> list[str]: ...


@dataclass
class GenerateSummary:
    """What one :func:`generate_answers` call did."""

    written: int = 0
    resumed: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    output: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"written": self.written, "resumed": self.resumed, "failed": len(self.failed),
                "failures": dict(list(self.failed.items())[:20]), "output": self.output}


def existing_answer_ids(path: Path, model_id: str | None = None) -> set[str]:
    """Question ids already answered in ``path`` (as strings). A truncated last line (a run killed mid-write) is
    cut off the file; any other unreadable line is an error, and so is an answer of another ``model_id`` (resuming
    must not mix two models' answers in one file)."""
    path = Path(path)
    if not path.is_file():
        return set()
    data = path.read_bytes()
    lines = data.split(b"\n")
    ids: set[str] = set()
    good = 0
    for n, line in enumerate(lines):
        if not line.strip():
            good += len(line) + 1
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) - 1:  # the unterminated last line of an interrupted write
                with open(path, "r+b") as fh:
                    fh.truncate(good)
                break
            raise RowsError(f"{path}, line {n + 1}: not valid JSON; fix or remove the answer file") from None
        if "question_id" not in row:
            raise RowsError(f"{path}, line {n + 1}: an answer without question_id")
        if model_id is not None and row.get("model_id", model_id) != model_id:
            raise RowsError(f"{path} holds answers of model {row['model_id']!r}, not {model_id!r}: write to another "
                            "file (or delete it to start over)")
        ids.add(str(row["question_id"]))
        good += len(line) + 1
    return ids


def answer_row(prompt: BenchmarkPrompt, question: str, answer: str, model_id: str, id_key: str) -> dict[str, Any]:
    """The answer line of ``prompt``: its own fields, then question_id, prompt, text, model_id."""
    qid: Any = prompt.fields.get(id_key, prompt.id) if id_key != INDEX_KEY else int(prompt.id)
    return {**answer_fields(prompt), "question_id": qid, "prompt": question, "text": answer, "model_id": model_id}


def generate_answers(
    prompts: Sequence[BenchmarkPrompt],
    runner: AnswerRunner,
    out_path: Path,
    image_dir: Path,
    config: GenerationConfig,
    id_key: str = "question_id",
    progress: Callable[[int], None] | None = None,
) -> GenerateSummary:
    """Answer every prompt not yet in ``out_path`` with ``runner``; appends to ``out_path`` as it goes.

    ``id_key`` is the prompts' id field (from :func:`mfpo.eval.rows.id_key_of`), copied into each
    answer's ``question_id`` with its original type. Prompts whose image cannot be read are
    skipped and reported in :attr:`GenerateSummary.failed` (id -> reason).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = existing_answer_ids(out_path, runner.name)
    todo = list(prompts[: config.limit] if config.limit else prompts)
    summary = GenerateSummary(resumed=sum(p.id in done for p in todo), output=str(out_path))
    todo = [p for p in todo if p.id not in done]
    if progress and summary.resumed:
        progress(summary.resumed)
    with open(out_path, "a", encoding="utf-8") as fh:
        for start in range(0, len(todo), config.batch_size):
            chunk = todo[start : start + config.batch_size]
            ready: list[tuple[BenchmarkPrompt, GenerationRequest]] = []
            for p in chunk:
                try:
                    image = load_prompt_image(p, image_dir)
                except ImageError as exc:
                    summary.failed[p.id] = str(exc)
                    continue
                ready.append((p, GenerationRequest(p.id, p.question + config.prompt_suffix, image)))
            answers = runner.generate([r for _, r in ready], config) if ready else []
            if len(answers) != len(ready):
                raise RuntimeError(f"runner {runner.name} returned {len(answers)} answers for {len(ready)} prompts")
            for (p, request), answer in zip(ready, answers, strict=True):
                fh.write(json.dumps(answer_row(p, request.question, answer, runner.name, id_key),
                                    ensure_ascii=False) + "\n")
            fh.flush()
            summary.written += len(ready)
            if progress:
                progress(len(chunk))
    return summary
