"""Jobs over the object store (local folder and S3 over HTTP): intake, idempotent processing, dataset."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.images import data_uri, inline_synth_items, png, png_claiming
from support.s3_server import S3Server, running_s3_server

from mfpo.jobs import (
    ItemRejected,
    JobClosed,
    JobKeys,
    JobNotFinished,
    JobNotFound,
    JobStore,
    accept_item,
    collect_dataset,
    run_item,
    uploads_prefix,
    write_job_dataset,
)
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.resources import build_resources
from mfpo.schemas import ResultRecord
from mfpo.storage.local import LocalStore
from mfpo.storage.s3 import S3Store
from mfpo.synth import SynthConfig

OPTIONS = GenerateConfig.model_validate({"regions": {"mode": "annotations"}, "limits": {"max_pixels": 1_000_000}})


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def jobs(request, tmp_path) -> JobStore:
    if request.param == "local":
        return JobStore(LocalStore(tmp_path / "store"))
    server: S3Server = request.getfixturevalue("s3_server")
    return JobStore(S3Store(server.config(f"jobs-{uuid.uuid4().hex[:8]}", create_bucket=True)))


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[dict]:
    return inline_synth_items(tmp_path_factory.mktemp("scenes"), SynthConfig(n=5, seed=2, width=96, height=80))


@pytest.fixture(scope="module")
def resources():
    return build_resources(OPTIONS.regions)


def test_hostile_items_are_rejected_with_reasons(jobs, items):
    job = jobs.create_job("acme", "hostile", OPTIONS)
    good = items[0]
    cases = {
        "not an object": ([1, 2], "must be a JSON object"),
        "wrong type": ({**good, "question": 5}, "question: Input should be a valid string"),
        "missing": ({"image": good["image"], "question": "q"}, "chosen: Field required"),
        "empty text": ({**good, "chosen": "  "}, "chosen: Value error, text is empty"),
        "unknown field": ({**good, "extra": 1}, "extra: Extra inputs are not permitted"),
        "bad id": ({**good, "id": "../../etc"}, "is not allowed"),
        "path": ({**good, "image": "/etc/passwd"}, "must be a data: URI"),
        "url": ({**good, "image": "http://169.254.169.254/latest"}, "must be a data: URI"),
        "traversal": ({**good, "image": "store://uploads/../../x"}, "is not allowed"),
        "other tenant's key": ({**good, "image": "store://tenants/other/uploads/a.png"}, "must name an uploaded"),
        "missing upload": ({**good, "image": "store://uploads/none.png"}, "no uploaded object"),
        "not image": ({**good, "image": data_uri(b"hello world")}, "not an image"),
        "truncated": ({**good, "image": data_uri(png(50, 50)[:60])}, "corrupt or truncated"),
        "bomb": ({**good, "image": data_uri(png_claiming(100_000, 100_000))}, "max_pixels"),
        "too big": ({**good, "image": data_uri(png(1100, 1000))}, "max_pixels=1000000"),
    }
    for name, (raw, reason) in cases.items():
        with pytest.raises(ItemRejected, match=reason):
            accept_item(jobs, job, raw, seq=0)
        assert name and jobs.item_ids(job) == []
    assert accept_item(jobs, job, good, seq=0) == good["id"]
    with pytest.raises(ItemRejected, match="already in job"):
        accept_item(jobs, job, good, seq=1)


def test_uploaded_images_are_found_under_the_tenant(jobs, items):
    job = jobs.create_job("acme", "uploads", OPTIONS)
    jobs.store.put(uploads_prefix("acme") + "scene.png", png(40, 30))
    iid = accept_item(jobs, job, {**items[0], "id": None, "image": "store://uploads/scene.png"}, seq=0)
    stored = jobs.get_item(job, iid)
    assert jobs.image_bytes(stored) == png(40, 30) and stored.item.image == f"store://{stored.image_key}"


def test_items_run_once_and_the_dataset_keeps_submission_order(jobs, items, resources):
    job = jobs.create_job("acme", "e2e", OPTIONS)
    ids = [accept_item(jobs, job, r, seq=i) for i, r in enumerate(reversed(items))]
    with pytest.raises(JobNotFinished, match="5 item"):
        collect_dataset(jobs, job)
    assert sorted(jobs.pending(job)) == sorted(ids)
    outcomes = {i: run_item(jobs, job, i, resources) for i in ids}
    assert {o.status for o in outcomes.values()} == {"done"} and jobs.pending(job) == []
    # re-delivery is a no-op: same outcome object back, nothing rewritten
    again = run_item(jobs, job, ids[0], resources)
    assert again == outcomes[ids[0]]
    # a worker that died after writing outputs but before its outcome: re-run rewrites the same keys
    record_key = outcomes[ids[1]].record_key
    before = jobs.outputs(job).get(record_key)
    jobs.store.delete(JobKeys("acme", job.id).outcome(ids[1]))
    assert jobs.pending(job) == [ids[1]]
    assert run_item(jobs, job, ids[1], resources).record_key == record_key
    assert jobs.outputs(job).get(record_key) == before
    data = write_job_dataset(jobs, job)
    assert [r.id for r in data.records] == ids and data.failures == []
    root = JobKeys("acme", job.id).dataset
    lines = jobs.store.get(f"{root}/dataset.jsonl").decode().splitlines()
    assert [ResultRecord.model_validate_json(line).id for line in lines] == ids
    for rec in data.records:
        for key in (rec.image, rec.rejected_image, rec.mask):
            assert jobs.outputs(job).exists(key)
    assert jobs.store.get(f"{root}/dataset.parquet")[:4] == b"PAR1"


def test_a_bad_image_that_slipped_in_ends_failed_with_a_reason(jobs, items, resources):
    job = jobs.create_job("acme", "fail", OPTIONS)
    iid = accept_item(jobs, job, items[0], seq=0)
    stored = jobs.get_item(job, iid)
    jobs.store.put(stored.image_key, b"garbage")  # corrupted in the store after intake
    outcome = run_item(jobs, job, iid, resources)
    assert outcome.status == "failed" and outcome.failure is not None and outcome.failure.stage == "image"
    assert collect_dataset(jobs, job).failures[0].id == iid


def test_tenants_are_isolated_and_closed_jobs_refuse_items(jobs, items):
    job = jobs.create_job("acme", "mine", OPTIONS)
    assert jobs.get_job("acme", job.id) == job
    for tenant, job_id in (("other", job.id), ("acme", "missing"), ("acme", "../x")):
        with pytest.raises(JobNotFound):
            jobs.get_job(tenant, job_id)
    assert [j.id for j in jobs.list_jobs("other")] == []
    closed = jobs.close_job(job)
    assert closed.closed_at is not None and jobs.get_job("acme", job.id).closed_at == closed.closed_at
    with pytest.raises(JobClosed):
        accept_item(jobs, closed, items[0], seq=0)


def test_local_layout(tmp_path: Path, items):
    jobs = JobStore(LocalStore(tmp_path))
    job = jobs.create_job("acme", "layout", OPTIONS)
    iid = accept_item(jobs, job, items[0], seq=0)
    root = tmp_path / "tenants" / "acme" / "jobs" / job.id
    assert (root / "job.json").is_file() and (root / "items" / f"{iid}.json").is_file()
    assert (root / "inputs" / f"{iid}.png").is_file()


def test_closed_jobs_are_indexed_until_their_dataset_is_written(jobs, items, resources):
    job = jobs.create_job("acme", "index", OPTIONS)
    iid = accept_item(jobs, job, items[0], seq=0)
    assert jobs.unfinished_jobs() == []
    job = jobs.close_job(job)
    assert jobs.unfinished_jobs() == [("acme", job.id)]
    run_item(jobs, job, iid, resources)
    write_job_dataset(jobs, job)
    assert jobs.unfinished_jobs() == []


def test_worker_beat_schedules_the_periodic_reconcile():
    from services.settings import Settings
    from worker.app import create_celery

    app = create_celery(Settings(reconcile_interval_s=42))
    entry = app.conf.beat_schedule["reconcile-unfinished-jobs"]
    assert entry["task"] == "mfpo.reconcile_unfinished" and entry["schedule"] == 42.0
    import worker.tasks

    assert "mfpo.reconcile_unfinished" in worker.tasks.celery_app.tasks


def test_perturb_without_regions_recomputes_or_asks_for_them(jobs, items, resources):
    from mfpo.jobs.stages import MissingStageOutput, keywords_stage, perturb_stage

    job = jobs.create_job("acme", "stages", OPTIONS)
    iid = accept_item(jobs, job, items[0], seq=0)
    assert keywords_stage(jobs, job, iid, resources)
    with pytest.raises(MissingStageOutput, match=r"regions\.npz"):  # a CPU worker re-queues the regions stage
        perturb_stage(jobs, job, iid, resources, recompute_missing=False)
    assert jobs.get_outcome(job, iid) is None
    assert perturb_stage(jobs, job, iid, resources).status == "done"  # one process: recomputed in place
