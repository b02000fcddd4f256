"""The finished dataset of a job: records in submission order, written into the store."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mfpo.jobs.records import JobRecord
from mfpo.jobs.store import JobKeys, JobStore
from mfpo.pipeline.dataset import dataset_jsonl, dataset_parquet
from mfpo.schemas import Failure, ResultRecord


class JobNotFinished(RuntimeError):
    """Some items have neither a result nor a failure yet."""


@dataclass
class JobDataset:
    """Records (done items) and failures, both in submission order."""

    records: list[ResultRecord] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def collect_dataset(jobs: JobStore, job: JobRecord) -> JobDataset:
    """Gather every item's outcome; raises :class:`JobNotFinished` while any is pending."""
    pending = jobs.pending(job)
    if pending:
        raise JobNotFinished(f"job {job.id}: {len(pending)} item(s) not finished")
    outputs = jobs.outputs(job)
    order = sorted((jobs.get_item(job, i).seq, i) for i in jobs.item_ids(job))
    result = JobDataset()
    for _, item_id in order:
        outcome = jobs.get_outcome(job, item_id)
        assert outcome is not None
        if outcome.status == "done":
            assert outcome.record_key is not None
            result.records.append(ResultRecord.model_validate_json(outputs.get(outcome.record_key)))
        elif outcome.failure is not None:
            result.failures.append(outcome.failure)
    return result


def write_job_dataset(jobs: JobStore, job: JobRecord) -> JobDataset:
    """Write ``dataset/{dataset.jsonl, dataset.parquet, failures.jsonl}`` of a finished job.

    Record image paths stay relative to the job's ``out/`` folder (as ``mfpo generate``
    writes them), so the manifest is also written into ``out/``: ``s3://bucket/.../out`` is then
    a self-contained dataset for the trainer. ``dataset/dataset.jsonl`` is written last, so its
    presence means complete.
    """
    data = collect_dataset(jobs, job)
    root = JobKeys(job.tenant, job.id).dataset
    failures = "".join(json.dumps(f.model_dump(mode="json"), ensure_ascii=False) + "\n" for f in data.failures)
    jobs.store.put(f"{root}/failures.jsonl", failures.encode("utf-8"), "application/x-ndjson")
    jsonl, parquet = dataset_jsonl(data.records), dataset_parquet(data.records)
    outputs = jobs.outputs(job)
    for store, prefix in ((outputs, ""), (jobs.store, f"{root}/")):
        store.put(f"{prefix}dataset.parquet", parquet, "application/vnd.apache.parquet")
    outputs.put("dataset.jsonl", jsonl, "application/x-ndjson")
    jobs.store.put(JobKeys(job.tenant, job.id).manifest, jsonl, "application/x-ndjson")  # last: finished
    jobs.mark_finished(job)
    return data
