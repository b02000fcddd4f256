"""The negatives stage in the stage graph: every kind through ``mfpo generate`` and the platform executor.

Each kind's image lands in the record (``negatives``), the dataset (one Parquet column per kind) and the
store; runs are deterministic for a seed and resume; fallbacks and per-item failures carry their reasons;
the platform routes model kinds to the gpu queue and refuses kinds its deployment cannot make.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support.images import inline_synth_items
from support.jobs import RecordingSender, drain, state_of
from support.platform import redis_url_for_tests, xdist_index

from mfpo.jobs import Dispatcher, JobKeys, JobStore, PlatformSettings, Submission
from mfpo.jobs.intake import read_image_reference, validate_item
from mfpo.jobs.records import JobRecord
from mfpo.models.tiny import write_tiny_clip
from mfpo.models.tiny_llava import write_tiny_llava
from mfpo.negatives.models import release_models
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.dataset import read_dataset
from mfpo.pipeline.embedded import run_generate
from mfpo.schemas import ResultRecord
from mfpo.stages import STAGES
from mfpo.storage.local import LocalStore
from mfpo.synth import SynthConfig, generate_scenes

ALL_KINDS = ["mfpo", "mdpo", "global", "adavip", "mbpo"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"clip": write_tiny_clip(root / "clip"), "llava": write_tiny_llava(root / "llava")}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scenes(SynthConfig(n=6, seed=4, width=128, height=96), tmp_path_factory.mktemp("synth"))


def options(models: dict[str, Path], kinds: list[str], **extra: object) -> GenerateConfig:
    return GenerateConfig.model_validate({
        "regions": {"mode": "annotations"},
        "negatives": {"kinds": kinds, "adavip": {"clip": {"model_path": str(models["clip"])}},
                      "mbpo": {"model_path": str(models["llava"]), "steps": 2, "max_new_tokens": 6}},
        **extra,
    })


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_kind_is_recorded_stored_and_deterministic(models, synth, tmp_path):
    config = options(models, ALL_KINDS)
    first = run_generate(synth, tmp_path / "a", config, workers=1, chunk_size=4, gallery=False)
    assert (first.done, first.failed) == (6, 0)
    records = list(read_dataset(tmp_path / "a"))
    for record in records:
        assert list(record.negatives) == ALL_KINDS  # the job's order
        assert record.rejected_image == record.negatives["mfpo"].image == f"rejected/{Path(record.image).stem}.png"
        for kind, negative in record.negatives.items():
            with Image.open(tmp_path / "a" / negative.image) as image, Image.open(tmp_path / "a" / negative.mask) as m:
                assert image.mode == "RGB" and m.size == image.size
                if kind in ("mfpo", "global", "adavip"):  # same size as the original
                    assert image.size == (128, 96)
                elif kind == "mdpo":  # the model's input square (336: LLaVA-1.5)
                    assert image.size == (336, 336)
                else:  # MBPO: the policy's own view (the tiny LLaVA's 56 px)
                    assert list(image.size) == negative.details["view_size"] == [56, 56]
        assert record.negatives["mbpo"].response or record.negatives["mbpo"].fallback
        assert record.negatives["mdpo"].details["crop"]["height"] > 0
        adavip = record.negatives["adavip"].details
        assert adavip["candidates"] and all("score" in c for c in adavip["candidates"])  # every candidate scored
        assert adavip["chosen"] == int(np.argmin([c["score"] for c in adavip["candidates"]]))  # eq. 9: least similar
    # one column per kind in the Parquet file
    table = pq.read_table(tmp_path / "a" / "dataset.parquet")
    for kind in ALL_KINDS:
        assert table.column(f"rejected_image_{kind}").to_pylist() == [r.negatives[kind].image for r in records]
    assert table.column("rejected_mbpo").to_pylist() == [r.negatives["mbpo"].response for r in records]
    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    assert stats["negatives"] == dict.fromkeys(ALL_KINDS, 6)
    # the same run elsewhere makes the same bytes (seeded per item, not per batch or process)
    release_models()
    again = run_generate(synth, tmp_path / "b", config, workers=1, chunk_size=3, gallery=False)
    assert again.done == 6
    for record in records:
        for kind, negative in record.negatives.items():
            if kind == "mbpo":
                continue  # PGD signs near 0 may flip with the batch (documented): compared below
            assert digest(tmp_path / "a" / negative.image) == digest(tmp_path / "b" / negative.image), (kind, record.id)
    # a re-run resumes every chunk: nothing is made again
    resumed = run_generate(synth, tmp_path / "a", config, workers=1, chunk_size=4, gallery=False)
    assert (resumed.resumed, resumed.done) == (6, 0)


def test_the_first_kind_is_the_rejected_image_and_other_options_change_the_keys(models, synth, tmp_path):
    config = options(models, ["mdpo", "global"])
    summary = run_generate(synth, tmp_path / "out", config, workers=1, chunk_size=8, gallery=False)
    assert summary.done == 6
    record = next(read_dataset(tmp_path / "out"))
    assert list(record.negatives) == ["mdpo", "global"] and record.rejected_image.startswith("rejected-mdpo/")
    assert not (tmp_path / "out" / "rejected").exists()  # MFPO's noise was not asked for: not made
    # exports: each record's rejected_image by default, or the kind asked for
    from mfpo.exporters import export_dataset

    rows = pq.read_table(export_dataset(tmp_path / "out", "trl", tmp_path / "trl.parquet", negatives="global"))
    noised = (tmp_path / "out" / record.negatives["global"].image).read_bytes()
    assert rows.column("rejected_images").to_pylist()[0][0]["bytes"] == noised
    with pytest.raises(ValueError, match="has no 'adavip' rejected image"):
        export_dataset(tmp_path / "out", "hf", tmp_path / "hf.parquet", negatives="adavip")
    assert not (tmp_path / "hf.parquet").exists()
    default = GenerateConfig.model_validate({"regions": {"mode": "annotations"}})
    assert "negatives" not in default.output_options()  # MFPO alone: the keys of earlier datasets hold
    assert config.output_options()["negatives"]["kinds"] == ["mdpo", "global"]
    assert "model_path" not in json.dumps(options(models, ["adavip"]).output_options())  # deployment, not output


def test_adavip_without_a_usable_object_falls_back_to_global_noise_with_the_reason(models, synth, tmp_path):
    """Whole-image regions are never a removable object (max_mask_fraction): AdaViP records why it used noise."""
    config = options(models, ["adavip"], regions={"mode": "global"})
    run_generate(synth, tmp_path / "out", config, workers=1, chunk_size=8, gallery=False)
    records = list(read_dataset(tmp_path / "out"))
    assert len(records) == 6
    for record in records:
        adavip = record.negatives["adavip"]
        assert adavip.fallback == "global_noise" and "no usable candidate" in adavip.details["reason"]
        assert adavip.details["skipped"]  # the whole-image region, with why it was skipped
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["negative_fallbacks"] == {"adavip": 6}


def test_one_item_a_constructor_cannot_serve_fails_alone_with_the_reason(models, synth, tmp_path, monkeypatch):
    from mfpo.negatives import construct as construct_module
    from mfpo.negatives.base import negatives_error

    real = construct_module.check_request
    bad = json.loads(synth.read_text().splitlines()[2])["id"]

    def check(kind, request, config):  # type: ignore[no-untyped-def]
        if kind == "mdpo" and request.id == bad:
            raise negatives_error("the image is a test's bad item", request.id)
        return real(kind, request, config)

    monkeypatch.setattr(construct_module, "check_request", check)
    monkeypatch.setattr("mfpo.stages.negatives.check_request", check)
    summary = run_generate(synth, tmp_path / "out", options(models, ["mfpo", "mdpo"]), workers=1, chunk_size=8,
                           gallery=False)
    assert (summary.done, summary.failed) == (5, 1)
    [failure] = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert failure["id"] == bad and failure["stage"] == "negatives" and "test's bad item" in failure["reason"]


def test_a_misconfigured_adavip_detector_fails_each_item_with_what_to_set(models, synth, tmp_path):
    config = options(models, ["adavip"], negatives={
        "kinds": ["adavip"], "adavip": {"clip": {"model_path": str(models["clip"])}, "candidates": "regions+detector"}})
    summary = run_generate(synth, tmp_path / "out", config, workers=1, chunk_size=8, gallery=False)
    assert summary.done == 0 and summary.failed == 6
    reasons = {json.loads(line)["reason"] for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()}
    assert len(reasons) == 1 and "grounding model and SAM" in reasons.pop()


# -- the platform ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_client():
    import redis

    return redis.Redis.from_url(redis_url_for_tests(10 + xdist_index()))


def test_the_platform_runs_the_negatives_stage_on_the_right_queue(models, tmp_path, redis_client):
    settings = PlatformSettings(queue_prefix=f"n{uuid.uuid4().hex[:8]}-", chunk_size=3, submit_threads=2)
    jobs = JobStore(LocalStore(tmp_path / "store"))
    config = GenerateConfig.model_validate({"regions": {"mode": "annotations"},
                                            "negatives": {"kinds": ["mfpo", "mdpo", "global"]}})
    job = jobs.create_job("acme", "negatives", config)
    state = state_of(redis_client, settings, job)
    state.init()
    sender = RecordingSender()
    rows = inline_synth_items(tmp_path / "scenes", SynthConfig(n=5, seed=1, width=96, height=80))
    dispatcher = Dispatcher(sender, settings.queue_prefix, False)
    with Submission(jobs, state, dispatcher, job, settings) as submission:
        for index, raw in enumerate(rows):
            from mfpo.jobs.intake import IntakeLimits

            item = validate_item(raw, IntakeLimits(max_text_chars=2000))
            submission.add(index, item, read_image_reference(jobs, job, item.image))
        submission.finish()
    drain(sender, jobs, redis_client, settings)
    assert state.begin_close() == 0
    job = jobs.close_job(job)
    if state.mark_closed():
        dispatcher.finalize(job)
    drain(sender, jobs, redis_client, settings)
    lines = jobs.store.get(JobKeys(job.tenant, job.id).manifest).decode().splitlines()
    records = [ResultRecord.model_validate_json(line) for line in lines]
    assert len(records) == 5 and all(list(r.negatives) == ["mfpo", "mdpo", "global"] for r in records)
    out = JobKeys(job.tenant, job.id)
    for record in records:
        for negative in record.negatives.values():
            assert jobs.store.exists(f"{out.out}/{negative.image}"), negative.image
    # routing: numpy kinds on the cpu queue; a job asking for a model kind has its negatives stage on the gpu queue
    gpu_options = GenerateConfig.model_validate({"negatives": {"kinds": ["mfpo", "mbpo"],
                                                               "mbpo": {"model_path": str(models["llava"])}}})
    gpu_job = JobRecord(tenant="acme", id="j-gpu", name="g", options=gpu_options)
    assert dispatcher.queue_for(STAGES["negatives"], job) == f"{settings.queue_prefix}cpu"
    assert dispatcher.queue_for(STAGES["negatives"], gpu_job) == f"{settings.queue_prefix}gpu"
    assert dispatcher.queue_for(STAGES["perturb"], gpu_job) == f"{settings.queue_prefix}cpu"


def test_deployment_model_paths_go_into_gpu_stages_only(models):
    settings = PlatformSettings(clip_model="/models/clip", policy_model="/models/llava",
                                inpainting_model="/models/sd-inpainting")
    assert settings.negative_kinds() == ["mfpo", "mdpo", "global", "adavip", "mbpo"]
    assert PlatformSettings().negative_kinds() == ["mfpo", "mdpo", "global"]
    asked = {"kinds": ["adavip", "mbpo"], "mbpo": {"steps": 3}}
    job_options = GenerateConfig.model_validate({"negatives": settings.deployment_negatives(asked)})
    assert job_options.negatives.adavip.clip.model_path == "/models/clip"  # type: ignore[union-attr]
    assert job_options.negatives.adavip.inpainter == "diffusers"
    assert (job_options.negatives.mbpo.model_path, job_options.negatives.mbpo.steps) == ("/models/llava", 3)
    moved = PlatformSettings(clip_model="/new/clip", policy_model="/new/llava")  # the deployment's paths win
    assert moved.stage_config(job_options, gpu=True).negatives.mbpo.model_path == "/new/llava"
    assert moved.stage_config(job_options, gpu=False) is job_options


def test_the_gallery_shows_each_kind_with_how_it_was_made_in_chromium(models, synth, tmp_path):
    from support.browser import chromium, load_all_images

    from mfpo.gallery import write_dataset_gallery

    kinds = ["mfpo", "mdpo", "global", "adavip"]
    config = options(models, kinds, regions={"mode": "auto"})
    run_generate(synth, tmp_path / "out", config, workers=1, chunk_size=8, gallery=False)
    records = list(read_dataset(tmp_path / "out"))
    page_path = write_dataset_gallery(tmp_path / "out")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(page_path.as_uri())
        load_all_images(page)
        cards = page.locator("article.card")
        assert cards.count() == len(records) == 6
        for k, record in enumerate(records):
            strip = cards.nth(k).locator("figure.negative")
            assert strip.evaluate_all("f => f.map(e => e.dataset.kind)") == kinds
            sizes = strip.locator("img").evaluate_all("i => i.map(e => [e.getAttribute('src'), e.naturalWidth])")
            assert [src for src, _ in sizes] == [record.negatives[k].image for k in kinds]
            assert all(width > 0 for _, width in sizes), sizes  # every kind's image loads
            captions = strip.locator("figcaption").all_inner_texts()
            chosen = record.negatives["adavip"].details["candidates"][record.negatives["adavip"].details["chosen"]]
            assert f"removed {chosen['label']}" in captions[3] and "crop" in captions[1]
        summary = dict(zip(page.locator("header .summary dt").all_inner_texts(),
                           page.locator("header .summary dd").all_inner_texts(), strict=True))
        assert summary["rejected images"] == "mfpo 6, mdpo 6, global 6, adavip 6"
        page.screenshot(path=str(tmp_path / "negatives.png"), full_page=True)
