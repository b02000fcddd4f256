"""One item of a job through all three stages in this process (see :mod:`mfpo.jobs.stages`).

:func:`run_item` is what a single-queue worker (or a test) runs: keywords -> regions ->
perturbation, each stage idempotent and resumable from the store, so a re-delivered
task finds the outcome and returns it without doing the work again, and one that
crashed midway continues from the last stage it wrote.
"""

from __future__ import annotations

from mfpo.jobs.records import ItemOutcome, JobRecord
from mfpo.jobs.stages import keywords_stage, perturb_stage, regions_stage
from mfpo.jobs.store import JobStore
from mfpo.pipeline.resources import StageResources


def run_item(jobs: JobStore, job: JobRecord, item_id: str, resources: StageResources) -> ItemOutcome:
    """Process one stored item of ``job`` (no-op if it already has an outcome)."""
    if keywords_stage(jobs, job, item_id, resources):
        regions_stage(jobs, job, item_id, resources)
    return perturb_stage(jobs, job, item_id, resources)
