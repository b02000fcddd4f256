"""One item of a job through the pipeline, idempotently: the body of a worker task.

:func:`run_item` reads the stored item, runs keywords -> regions -> perturbation with
the job's options (:mod:`mfpo.pipeline.item`), writes the outputs, then the outcome.
A re-delivered task finds the outcome and returns it without doing the work again;
one that crashed between outputs and outcome rewrites the same content-derived keys.
Permanent problems (bad image, no keywords ranking) end as ``failed`` with the reason;
transient store errors (:class:`~mfpo.storage.base.StoreUnavailable`) propagate so
the caller can retry.
"""

from __future__ import annotations

from mfpo.jobs.records import ItemOutcome, JobRecord
from mfpo.jobs.store import JobStore
from mfpo.pipeline.item import ItemError, generate_batch, prepare_item, store_outputs
from mfpo.pipeline.resources import StageResources
from mfpo.schemas import Failure


def run_item(jobs: JobStore, job: JobRecord, item_id: str, resources: StageResources) -> ItemOutcome:
    """Process one stored item of ``job`` (no-op if it already has an outcome)."""
    existing = jobs.get_outcome(job, item_id)
    if existing is not None:
        return existing
    stored = jobs.get_item(job, item_id)
    data = jobs.image_bytes(stored)
    try:
        prepared = prepare_item(stored.seq, stored.item, data, job.options)
    except ItemError as exc:
        outcome = ItemOutcome(item_id=item_id, status="failed",
                              failure=Failure(row=stored.seq, id=item_id, stage=exc.stage, reason=exc.reason))
    else:
        [result] = generate_batch([prepared], job.options, resources)
        if isinstance(result, Failure):
            outcome = ItemOutcome(item_id=item_id, status="failed", failure=result)
        else:
            store_outputs(jobs.outputs(job), result)
            outcome = ItemOutcome(item_id=item_id, status="done", record_key=prepared.keys.record)
    jobs.put_outcome(job, outcome)
    return outcome
