"""The reference pass (MFPO sec. 3.3): reference log-probs of the three sequences and the entropy
of the reference's predictive distribution over the chosen answer, for every item, once.

Training then needs no reference model in memory. The rows are written as
``reference.jsonl`` into the run's output folder and next to the dataset
(``reference/{key}.jsonl`` of the dataset's store, ``key`` from the model and dataset), where
a later run with the same model and data reuses them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import BaseModel

from trainer.collate import collate
from trainer.data import Example
from trainer.model import forward_logps, reference_mode


class ReferenceRow(BaseModel):
    id: str
    ref_chosen_logps: float
    ref_rejected_logps: float
    ref_chosen_perturbed_logps: float
    entropy: float


def reference_key(model_path: str, examples: Sequence[Example], precision: str = "no") -> str:
    """Content key of a reference pass: model location, precision, every item's id and texts."""
    h = hashlib.sha256(model_path.encode())
    if precision != "no":  # keys of full-precision passes stay as they were
        h.update(f"precision={precision}".encode())
    for e in examples:
        h.update(json.dumps([e.id, e.question, e.chosen, e.rejected]).encode())
    return h.hexdigest()[:16]


@torch.inference_mode()
def compute_reference(model: Any, processor: Any, examples: Sequence[Example], batch_size: int,
                      progress: Callable[[int], None] | None = None) -> list[ReferenceRow]:
    """Reference rows for ``examples``, in order (model in eval mode, adapters disabled).

    Pass the policy as the trainer runs it (after ``accelerator.prepare``, inside
    ``accelerator.autocast()``), so reference and policy log-probs share one precision.
    ``progress`` is called with the number of items of each finished batch (a progress bar).
    """
    was_training = model.training
    model.eval()
    rows: list[ReferenceRow] = []
    try:
        with reference_mode(model):
            for start in range(0, len(examples), batch_size):
                chunk = examples[start : start + batch_size]
                out = forward_logps(model, collate(processor, chunk))
                for k, e in enumerate(chunk):
                    rows.append(ReferenceRow(
                        id=e.id,
                        ref_chosen_logps=float(out["chosen"][k]),
                        ref_rejected_logps=float(out["rejected"][k]),
                        ref_chosen_perturbed_logps=float(out["chosen_perturbed"][k]),
                        entropy=float(out["entropy"][k]),
                    ))
                if progress is not None:
                    progress(len(chunk))
    finally:
        model.train(was_training)
    return rows


def rows_to_jsonl(rows: Sequence[ReferenceRow]) -> bytes:
    return "".join(r.model_dump_json() + "\n" for r in rows).encode("utf-8")


def rows_from_jsonl(data: bytes) -> list[ReferenceRow]:
    return [ReferenceRow.model_validate_json(line) for line in data.decode("utf-8").splitlines() if line.strip()]
