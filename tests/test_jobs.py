"""The platform library over a real Redis and real stores (local folder, S3 over HTTP), tasks run in-process.

Intake (claims, chunks, idempotent retries, hostile items), the job state (counters, completion,
finalize exactly once), reconcile (overdue work only), rebuild after Redis lost the state, and
the streamed dataset.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.images import data_uri, inline_synth_items, png, png_claiming
from support.jobs import RecordingSender, drain, state_of
from support.platform import redis_url_for_tests, xdist_index
from support.s3_server import S3Server, running_s3_server

from mfpo.jobs import (
    Dispatcher,
    IntakeLimits,
    ItemRejected,
    JobClosing,
    JobKeys,
    JobNotFinished,
    JobNotFound,
    JobState,
    JobStore,
    PlatformSettings,
    Submission,
    finalize_job,
    uploads_prefix,
)
from mfpo.jobs.dispatch import TASK_FINALIZE, TASK_STAGE
from mfpo.jobs.intake import read_image_reference, validate_item
from mfpo.jobs.recovery import reconcile_job
from mfpo.pipeline.config import GenerateConfig
from mfpo.schemas import PreferenceItem, ResultRecord
from mfpo.stages import GRAPH, STAGES
from mfpo.stages.blob import pack_images
from mfpo.storage.local import LocalStore
from mfpo.storage.s3 import S3Store
from mfpo.synth import SynthConfig

OPTIONS = GenerateConfig.model_validate({"regions": {"mode": "annotations"}, "limits": {"max_pixels": 1_000_000}})
LIMITS = IntakeLimits(max_text_chars=2000)


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
def redis_client():
    import redis

    return redis.Redis.from_url(redis_url_for_tests(10 + xdist_index()))


@pytest.fixture
def settings() -> PlatformSettings:
    return PlatformSettings(queue_prefix=f"t{uuid.uuid4().hex[:8]}-", chunk_size=4, submit_threads=2)


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[dict]:
    return inline_synth_items(tmp_path_factory.mktemp("scenes"), SynthConfig(n=14, seed=2, width=96, height=80))


def new_job(jobs: JobStore, redis_client, settings: PlatformSettings, name: str = "job"):  # type: ignore[no-untyped-def]
    job = jobs.create_job("acme", name, OPTIONS)
    state = state_of(redis_client, settings, job)
    state.init()
    return job, state


def submit(jobs: JobStore, state, sender: RecordingSender, job, settings: PlatformSettings,  # type: ignore[no-untyped-def]
           rows: list[dict]):
    """What POST .../items does: validate, read the image, add; returns the IntakeResult."""
    dispatcher = Dispatcher(sender, settings.queue_prefix, False)
    with Submission(jobs, state, dispatcher, job, settings) as submission:
        for index, raw in enumerate(rows):
            try:
                item = validate_item(raw, LIMITS)
                data = read_image_reference(jobs, job, item.image)
            except ItemRejected as exc:
                submission.reject(index, str(exc))
                continue
            submission.add(index, item, data)
        return submission.finish()


def dataset_ids(jobs: JobStore, job) -> list[str]:  # type: ignore[no-untyped-def]
    lines = jobs.store.get(JobKeys(job.tenant, job.id).manifest).decode().splitlines()
    return [ResultRecord.model_validate_json(line).id for line in lines]


def close(jobs: JobStore, state, sender: RecordingSender, job, settings):  # type: ignore[no-untyped-def]
    """What POST .../close does (no submissions in flight)."""
    assert state.begin_close() == 0
    job = jobs.close_job(job)
    if state.mark_closed():
        Dispatcher(sender, settings.queue_prefix, False).finalize(job)
    return job


def test_hostile_items_are_rejected_with_reasons(jobs, items, redis_client, settings):
    job, state = new_job(jobs, redis_client, settings)
    good = items[0]
    cases = {
        "not an object": ([1, 2], "must be a JSON object"),
        "wrong type": ({**good, "question": 5}, "question: Input should be a valid string"),
        "missing": ({"image": good["image"], "question": "q"}, "chosen: Field required"),
        "empty text": ({**good, "chosen": "  "}, "chosen: Value error, text is empty"),
        "too long": ({**good, "chosen": "a" * 2001}, "chosen longer than 2000 characters"),
        "unknown field": ({**good, "extra": 1}, "extra: Extra inputs are not permitted"),
        "bad id": ({**good, "id": "../../etc"}, "is not allowed"),
        "NaN box": ({**good, "annotations": [{"label": "cup", "box": [0, 0, float("nan"), 5]}]}, "finite number"),
        "infinite box": ({**good, "annotations": [{"label": "cup", "box": [0, 0, float("inf"), 5]}]}, "finite"),
        "path": ({**good, "image": "/etc/passwd"}, "must be a data: URI"),
        "url": ({**good, "image": "http://169.254.169.254/latest"}, "must be a data: URI"),
        "traversal": ({**good, "image": "store://uploads/../../x"}, "is not allowed"),
        "other tenant's key": ({**good, "image": "store://tenants/other/uploads/a.png"}, "must name an uploaded"),
        "missing upload": ({**good, "image": "store://uploads/none.png"}, "no uploaded object"),
    }
    for name, (raw, reason) in cases.items():
        with pytest.raises(ItemRejected, match=reason):
            item = validate_item(raw, LIMITS)
            read_image_reference(jobs, job, item.image)
        assert name
    decoded = {  # refused by the decode under the job's limits, before anything is stored
        "not image": (data_uri(b"hello world"), "not an image"),
        "truncated": (data_uri(png(50, 50)[:60]), "corrupt or truncated"),
        "bomb": (data_uri(png_claiming(100_000, 100_000)), "max_pixels"),
        "too big": (data_uri(png(1100, 1000)), "max_pixels=1000000"),
    }
    rows = [{**good, "id": f"bad-{n}", "image": ref} for n, (ref, _) in enumerate(decoded.values())] + [good]
    sender = RecordingSender()
    result = submit(jobs, state, sender, job, settings, rows)
    assert result.accepted == [(4, good["id"])]
    for (index, reason), (_, expected) in zip(result.rejected, decoded.values(), strict=True):
        assert expected in reason, (index, reason)
    assert state.counts().submitted == 1 and len(jobs.stored_chunks(job)) == 1


def test_uploaded_images_are_found_under_the_tenant(jobs, items, redis_client, settings):
    job, state = new_job(jobs, redis_client, settings)
    jobs.store.put(uploads_prefix("acme") + "scene.png", png(40, 30))
    assert read_image_reference(jobs, job, "store://uploads/scene.png") == png(40, 30)
    result = submit(jobs, state, RecordingSender(), job, settings,
                    [{**items[0], "id": None, "image": "store://uploads/scene.png"}])
    assert len(result.accepted) == 1 and result.rejected == []


def test_submission_writes_chunks_before_queueing_and_a_retry_is_idempotent(jobs, items, redis_client, settings):
    job, state = new_job(jobs, redis_client, settings)
    sender = RecordingSender()
    first = submit(jobs, state, sender, job, settings, items[:10])
    assert [i for i, _ in first.accepted] == list(range(10)) and first.rejected == []
    chunks = jobs.stored_chunks(job)
    assert len(chunks) == 3 and chunks == sorted(chunks)  # 4 + 4 + 2, in submission order
    keys = JobKeys("acme", job.id)
    for chunk in chunks:  # images and items stored before the first stage was queued
        assert jobs.store.exists(keys.artifact(chunk, "images")) and jobs.store.exists(keys.artifact(chunk, "items"))
    assert sorted((name, args[2:]) for name, args, _ in sender.sent) == [(TASK_STAGE, (c, "keywords")) for c in chunks]
    assert {c.status for c in state.chunk_states()} == {"queued"}
    # the same batch again (a client retrying after a timeout), plus 2 new items: nothing stored twice
    again = submit(jobs, state, sender, job, settings, items[:12])
    assert [i for i, _ in again.accepted] == list(range(12)) and again.rejected == []
    assert len(jobs.stored_chunks(job)) == 4 and state.counts().submitted == 12
    # same id, other content: a duplicate; an id repeated within one request: the repeat is refused
    other = {**items[0], "chosen": "A different answer about a red cup."}
    twice = submit(jobs, state, sender, job, settings, [other, items[12], items[12]])
    assert twice.accepted == [(1, items[12]["id"])]
    assert [i for i, _ in twice.rejected] == [0, 2] and all("duplicate id" in r for _, r in twice.rejected)
    drain(sender, jobs, redis_client, settings)
    close(jobs, state, sender, job, settings)
    assert drain(sender, jobs, redis_client, settings) == {TASK_FINALIZE: 1}
    assert dataset_ids(jobs, job) == [r["id"] for r in items[:13]]


def test_concurrent_submissions_of_the_same_ids_lose_nothing(jobs, items, redis_client, settings):
    """Two requests racing with the same ids: every id answered accepted ends in the dataset exactly once, and
    for an id submitted with two contents exactly one content wins."""
    job, state = new_job(jobs, redis_client, settings)
    sender = RecordingSender()
    variant = [{**r, "chosen": r["chosen"] + " Also a lamp."} for r in items]
    results: dict[str, object] = {}
    barrier = threading.Barrier(3)

    def run(name: str, rows: list[dict]) -> None:
        barrier.wait()
        results[name] = submit(jobs, state, sender, job, settings, rows)

    threads = [threading.Thread(target=run, args=("a", items)), threading.Thread(target=run, args=("b", items)),
               threading.Thread(target=run, args=("c", list(reversed(variant))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    accepted = [iid for r in results.values() for _, iid in r.accepted]  # type: ignore[attr-defined]
    assert set(accepted) == {r["id"] for r in items}
    for r in results.values():  # every item of every request got an answer
        assert len(r.accepted) + len(r.rejected) == len(items)  # type: ignore[attr-defined]
    drain(sender, jobs, redis_client, settings)
    close(jobs, state, sender, job, settings)
    drain(sender, jobs, redis_client, settings)
    ids = dataset_ids(jobs, job)
    assert sorted(ids) == sorted(r["id"] for r in items) and len(ids) == len(set(ids))
    assert state.counts().submitted == len(items) and state.counts().done == len(items)


def test_each_stage_runs_once_per_item_and_finalize_once(jobs, items, redis_client, settings):
    job, state = new_job(jobs, redis_client, settings)
    sender = RecordingSender()
    submit(jobs, state, sender, job, settings, list(reversed(items)))
    ran = drain(sender, jobs, redis_client, settings)
    assert ran == {TASK_STAGE: len(GRAPH) * 4}  # 14 items in 4 chunks, every stage once each; nothing else
    counts = state.counts()
    assert counts.stages == {s.name: 14 for s in GRAPH}
    assert (counts.submitted, counts.done, counts.failed, counts.running, counts.queued) == (14, 14, 0, 0, 0)
    assert not jobs.dataset_ready(job)  # open: no dataset yet
    close(jobs, state, sender, job, settings)
    assert drain(sender, jobs, redis_client, settings) == {TASK_FINALIZE: 1}
    assert dataset_ids(jobs, job) == [r["id"] for r in reversed(items)]
    assert state.counts().finalize == "done" and list(jobs.active_jobs()) == []
    # a redelivered stage task and a second finalize are harmless no-ops
    chunk = jobs.stored_chunks(job)[0]
    Dispatcher(sender, settings.queue_prefix, False).stage(job, chunk, STAGES["perturb"])
    drain(sender, jobs, redis_client, settings)
    assert finalize_job(jobs, state, job, settings) is None and state.counts().stages["perturb"] == 14
    keys = JobKeys("acme", job.id)
    assert jobs.store.get(f"{keys.dataset}/dataset.parquet")[:4] == b"PAR1"
    for record_line in jobs.store.get(keys.manifest).decode().splitlines():
        rec = ResultRecord.model_validate_json(record_line)
        for key in (rec.image, rec.rejected_image, rec.mask):
            assert jobs.outputs(job).exists(key)


def test_a_bad_image_that_slipped_in_ends_failed_with_a_reason(jobs, items, redis_client, settings):
    job, state = new_job(jobs, redis_client, settings)
    sender = RecordingSender()
    submit(jobs, state, sender, job, settings, items[:3])
    [chunk] = jobs.stored_chunks(job)
    keys = JobKeys("acme", job.id)
    blob = [(r["id"], b"garbage" if n == 1 else base64.b64decode(r["image"].split(",", 1)[1]))
            for n, r in enumerate(items[:3])]
    jobs.store.put(keys.artifact(chunk, "images"), pack_images(blob))  # corrupted in the store after intake
    drain(sender, jobs, redis_client, settings)
    close(jobs, state, sender, job, settings)
    drain(sender, jobs, redis_client, settings)
    assert dataset_ids(jobs, job) == [items[0]["id"], items[2]["id"]]
    failures = jobs.store.get(f"{keys.dataset}/failures.jsonl").decode()
    assert items[1]["id"] in failures and '"stage":"image"' in failures.replace(" ", "")
    assert (state.counts().done, state.counts().failed) == (2, 1)


def test_tenants_are_isolated_and_closed_jobs_refuse_items(jobs, items, redis_client, settings):
    job, state = new_job(jobs, redis_client, settings)
    assert jobs.get_job("acme", job.id) == job
    for tenant, job_id in (("other", job.id), ("acme", "missing"), ("acme", "../x")):
        with pytest.raises(JobNotFound):
            jobs.get_job(tenant, job_id)
    assert jobs.list_jobs("other", 10) == ([], None)
    closed = close(jobs, state, RecordingSender(), job, settings)
    assert closed.closed_at is not None and jobs.get_job("acme", job.id).closed_at == closed.closed_at
    with pytest.raises(JobClosing):
        submit(jobs, state, RecordingSender(), job, settings, items[:1])


def test_listing_jobs_is_paginated(jobs, redis_client, settings):
    made = [new_job(jobs, redis_client, settings, f"j{n}")[0].id for n in range(5)]
    page, cursor = jobs.list_jobs("acme", 2)
    seen = [j.id for j in page]
    while cursor is not None:
        page, cursor = jobs.list_jobs("acme", 2, cursor)
        seen += [j.id for j in page]
    assert seen == made


def test_reconcile_redispatches_overdue_work_only(jobs, items, redis_client, settings):
    job, state = new_job(jobs, redis_client, settings)
    sender = RecordingSender()
    submit(jobs, state, sender, job, settings, items[:8])
    a, b = jobs.stored_chunks(job)
    sender.sent.clear()
    dispatcher = Dispatcher(sender, settings.queue_prefix, False)
    state.start(a, "keywords", "keywords")  # a worker took chunk a, then died: its heartbeat stops
    now = time.time()
    assert reconcile_job(jobs, state, dispatcher, job, settings, now=now).redispatched == 0  # queued: not overdue
    report = reconcile_job(jobs, state, dispatcher, job, settings, now=now + settings.overdue_after_s + 1)
    assert report.redispatched == 1 and [args[2:] for _, args, _ in sender.sent] == [(a, "keywords")]
    late = now + settings.queued_timeout_s + 1  # a queue entry lost for hours: sent again
    assert reconcile_job(jobs, state, dispatcher, job, settings, now=late).redispatched == 2
    # a send that failed leaves the chunk undispatched: the next reconcile sends it at once
    sender.fail = True
    with pytest.raises(ConnectionError):
        dispatcher.stage(job, b, STAGES["keywords"])
    state.set_stage(b, "keywords", "undispatched")
    sender.fail = False
    assert reconcile_job(jobs, state, dispatcher, job, settings).redispatched == 1
    drain(sender, jobs, redis_client, settings)  # duplicates of a chunk's stage are skipped, never run twice
    counts = state.counts()
    assert counts.done == 8 and counts.stages["keywords"] == 8 and counts.stages["keywords:skipped"] > 0


def test_lost_state_is_rebuilt_from_the_store_and_the_job_finishes(jobs, items, redis_client, settings):
    job, state = new_job(jobs, redis_client, settings)
    sender = RecordingSender()
    submit(jobs, state, sender, job, settings, items)
    drain(sender, jobs, redis_client, settings, max_tasks=14)  # some chunks finish, others are mid-way
    before = state.counts()
    assert 0 < before.done < len(items)
    state.drop()  # Redis restarted empty (FLUSHALL)
    sender = RecordingSender()  # ... and its queues with it
    dispatcher = Dispatcher(sender, settings.queue_prefix, False)
    report = reconcile_job(jobs, state, dispatcher, job, settings)
    after = state.counts()
    assert report.rebuilt and (after.submitted, after.done) == (before.submitted, before.done)
    assert report.redispatched == len([c for c in state.chunk_states() if c.status != "done"]) > 0
    # claims came back too: a retried batch is still idempotent
    assert len(submit(jobs, state, sender, job, settings, items).accepted) == len(items)
    drain(sender, jobs, redis_client, settings)
    close(jobs, state, sender, job, settings)
    drain(sender, jobs, redis_client, settings)
    assert dataset_ids(jobs, job) == [r["id"] for r in items]


def test_a_lost_intermediate_output_is_made_again(jobs, items, redis_client, settings):
    job, state = new_job(jobs, redis_client, settings)
    sender = RecordingSender()
    submit(jobs, state, sender, job, settings, items[:4])
    [chunk] = jobs.stored_chunks(job)
    drain(sender, jobs, redis_client, settings, max_tasks=1)  # the keywords stage
    sender.sent.clear()
    jobs.store.delete(JobKeys("acme", job.id).artifact(chunk, "keywords"))  # lost after the keywords stage ran
    Dispatcher(sender, settings.queue_prefix, False).stage(job, chunk, STAGES["regions"])
    drain(sender, jobs, redis_client, settings)
    assert state.counts().stages["keywords"] == 8 and state.counts().done == 4


def test_finalize_reopens_a_chunk_whose_outcomes_were_lost(jobs, items, redis_client, settings):
    job, state = new_job(jobs, redis_client, settings)
    sender = RecordingSender()
    submit(jobs, state, sender, job, settings, items[:8])
    drain(sender, jobs, redis_client, settings)
    first = jobs.stored_chunks(job)[0]
    jobs.store.delete(JobKeys("acme", job.id).artifact(first, "outcomes"))
    close(jobs, state, sender, job, settings)
    with pytest.raises(JobNotFinished, match=first):
        drain(sender, jobs, redis_client, settings)
    assert state.counts().done == 4 and not jobs.dataset_ready(job)
    reconcile_job(jobs, state, Dispatcher(sender, settings.queue_prefix, False), job, settings)
    drain(sender, jobs, redis_client, settings)
    assert dataset_ids(jobs, job) == [r["id"] for r in items[:8]]


def test_local_layout(tmp_path: Path, items, redis_client, settings):
    jobs = JobStore(LocalStore(tmp_path))
    job, state = new_job(jobs, redis_client, settings)
    submit(jobs, state, RecordingSender(), job, settings, items[:1])
    root = tmp_path / "tenants" / "acme" / "jobs" / job.id
    [chunk] = jobs.stored_chunks(job)
    assert (root / "job.json").is_file() and (root / "chunks" / f"{chunk}.json").is_file()
    assert (root / "chunks" / f"{chunk}.zip").is_file()
    assert (tmp_path / "index" / "active" / "acme" / job.id).is_file()


def test_worker_beat_schedules_the_periodic_reconcile():
    from worker.app import create_celery

    app = create_celery(PlatformSettings(reconcile_interval_s=42))
    entry = app.conf.beat_schedule["reconcile-active-jobs"]
    assert entry["task"] == "mfpo.reconcile" and entry["schedule"] == 42.0
    import worker.tasks

    assert {"mfpo.reconcile", "mfpo.stage", "mfpo.finalize", "mfpo.rebuild"} <= set(worker.tasks.celery_app.tasks)


def test_preference_items_refuse_non_finite_numbers():
    with pytest.raises(ValueError, match="finite"):
        PreferenceItem.model_validate({"image": "x", "question": "q", "chosen": "c", "rejected": "r",
                                       "annotations": [{"label": "a", "polygon": [[0, 0], [1, float("nan")],
                                                                                  [2, 2]]}]})


def test_the_eta_follows_the_recent_rate_not_the_jobs_age(redis_client, settings):
    """A job idle for an hour before its items came reports the rate of its recent completions."""
    state = JobState(redis_client, settings.queue_prefix, "acme", uuid.uuid4().hex[:16])
    state.init()
    now = time.time()
    assert state.recent_rate(120, now=now) is None  # nothing finished yet: no rate, no made-up ETA
    for k in range(5):  # 5 chunks of 10 items, one every 2 s, just now
        redis_client.zadd(state.key("rate"), {f"c{k}:10": now - 10 + 2 * k})
    redis_client.zadd(state.key("rate"), {"old:1000": now - 3600})  # long ago: outside the window
    assert state.recent_rate(120, now=now) == pytest.approx(40 / 10)  # 4 chunks after the first, over 10 s


def test_a_stage_whose_process_keeps_dying_is_given_up_with_a_reason(jobs, items, redis_client, settings):
    """A chunk whose stage was started stage_max_attempts times without finishing (its process killed by the hard
    time limit or the kernel) ends: its items fail with the reason and the job can finish."""
    settings = settings.model_copy(update={"stage_max_attempts": 2})
    job, state = new_job(jobs, redis_client, settings)
    sender = RecordingSender()
    submit(jobs, state, sender, job, settings, items[:4])
    [chunk] = jobs.stored_chunks(job)
    for _ in range(2):  # two starts that never finished (the worker was killed each time)
        state.attempt(chunk, "keywords")
    drain(sender, jobs, redis_client, settings)
    close(jobs, state, sender, job, settings)
    drain(sender, jobs, redis_client, settings)
    failures = [json.loads(line) for line in jobs.store.get(f"{JobKeys('acme', job.id).dataset}/failures.jsonl")
                .decode().splitlines()]
    assert len(failures) == 4 and all("keywords stopped 2 times" in f["reason"] for f in failures)
    assert dataset_ids(jobs, job) == [] and state.counts().failed == 4


def test_transient_errors_do_not_use_up_a_chunks_attempts(jobs, items, redis_client, settings, monkeypatch):
    """A stage that fails with a transient store error more times than stage_max_attempts (an outage; the task is
    retried each time) is not taken for a dying process: once the store is back its items are done, none failed.
    (Before, a 5 s store outage failed whole chunks with "stopped 3 times ... killed".)"""
    import mfpo.jobs.execute as execute
    from mfpo.storage.base import StoreUnavailable

    settings = settings.model_copy(update={"stage_max_attempts": 2})
    job, state = new_job(jobs, redis_client, settings)
    sender = RecordingSender()
    submit(jobs, state, sender, job, settings, items[:4])
    [chunk] = jobs.stored_chunks(job)
    real_run_stage, outage = execute.run_stage, {"left": 5}

    def flaky_run_stage(stage, *args, **kwargs):  # type: ignore[no-untyped-def]
        if stage.name == "regions" and outage["left"] > 0:
            outage["left"] -= 1
            raise StoreUnavailable("store away")
        return real_run_stage(stage, *args, **kwargs)

    monkeypatch.setattr(execute, "run_stage", flaky_run_stage)
    close(jobs, state, sender, job, settings)
    for _ in range(10):  # each failure is a retry of the same task (Celery's autoretry)
        try:
            drain(sender, jobs, redis_client, settings)
            break
        except StoreUnavailable:
            sender.send_task(TASK_STAGE, ["acme", job.id, chunk, "regions"])
    assert outage["left"] == 0 and state.counts().failed == 0
    assert dataset_ids(jobs, job) == [item["id"] for item in items[:4]]
