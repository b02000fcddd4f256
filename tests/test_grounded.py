"""The grounded region provider on tiny random-weight models of the real architectures.

The models are written by ``mfpo models tiny`` (GroundingDINO and OWLv2 transformers
folders, a segment-anything checkpoint) and loaded through the production loading code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mfpo.grounding import GroundingConfig, ZeroShotDetector
from mfpo.models.tiny import write_tiny_models
from mfpo.pipeline.config import GenerateConfig
from mfpo.regions.base import RegionRequest
from mfpo.regions.grounded import GroundedProvider, get_grounded_provider
from mfpo.schemas import ResultRecord
from mfpo.segmentation import ModelLoadError, SamConfig, SamSegmenter, load_sam
from mfpo.synth import SynthConfig, generate_scenes, make_scene


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="module")
def scenes() -> list:
    config = SynthConfig(n=4, seed=9, width=160, height=128)
    return [make_scene(config, i) for i in range(4)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_batched_sam_equals_one_image_at_a_time(tiny, scenes):
    segmenter = SamSegmenter(SamConfig(checkpoint=str(tiny["sam"]), sam_type="vit_tiny", device="cpu", batch_size=3))
    images = [s.image for s in scenes]
    boxes = [np.array([o.box for o in s.objects], dtype=np.float64) for s in scenes]
    boxes[1] = np.zeros((0, 4))  # an image without boxes is skipped, not an error
    batched = segmenter.segment(images, boxes)
    single = segmenter.segment_one_at_a_time(images, boxes)
    assert [m.shape for m in batched] == [(len(b), 128, 160) for b in boxes]
    ious = [_iou(a, b) for mb, ms in zip(batched, single, strict=True) for a, b in zip(mb, ms, strict=True)]
    assert ious and min(ious) >= 0.99
    assert any(m.any() and not m.all() for mb in batched for m in mb)  # not degenerate masks


@pytest.mark.parametrize("kind", ["grounding_dino", "owlv2"])
def test_batched_detection_equals_one_image_at_a_time(tiny, scenes, kind):
    config = GroundingConfig(model_path=str(tiny[kind]), device="cpu", batch_size=4, box_threshold=0.0,
                             text_threshold=0.0)
    detector = ZeroShotDetector(config)
    assert detector.architecture == kind
    images = [s.image for s in scenes]  # same size: no batch padding
    keywords = [sorted({o.kind for o in s.objects}) for s in scenes]
    keywords[0] = [f"{o.color} {o.kind}" for o in scenes[0].objects]  # multi-token phrases next to single words
    batched = detector.detect(images, keywords)
    single = [detector.detect([im], [kw])[0] for im, kw in zip(images, keywords, strict=True)]
    assert any(batched)
    for b, s in zip(batched, single, strict=True):
        assert b.keys() == s.keys()
        for kw in b:
            np.testing.assert_allclose(b[kw].boxes, s[kw].boxes, atol=1e-3)
            np.testing.assert_allclose(b[kw].scores, s[kw].scores, atol=1e-4)
            assert (b[kw].boxes[:, :2] >= 0).all() and (b[kw].boxes[:, 2] <= 160).all()
            assert len(b[kw].boxes) <= config.max_boxes_per_keyword


def test_grounded_provider_regions_and_model_cache(tiny, scenes):
    grounding = GroundingConfig(model_path=str(tiny["grounding_dino"]), device="cpu", box_threshold=0.0,
                                text_threshold=0.0)
    sam = SamConfig(checkpoint=str(tiny["sam"]), sam_type="vit_tiny", device="cpu", min_mask_fraction=0.0,
                    max_mask_fraction=1.0)
    provider = get_grounded_provider(grounding, sam)
    assert get_grounded_provider(grounding, sam) is provider  # loaded once per process
    requests = [RegionRequest(image=s.image, keywords=tuple(sorted({o.kind for o in s.objects}))) for s in scenes]
    found = provider.locate(requests)
    assert len(found) == len(requests)
    for request, regions in zip(requests, found, strict=True):
        for region in regions:
            assert region.source == "grounded" and region.keyword in request.keywords
            assert region.mask.shape == request.image.shape[:2] and region.mask.any()
    strict = GroundedProvider(provider.detector, SamSegmenter(sam.model_copy(update={"max_mask_fraction": 1e-6,
                                                                                         "min_mask_fraction": 0.0})))
    assert all(r == [] for r in strict.locate(requests))  # every mask is "almost the whole image" now


def test_bad_model_files_fail_at_start_up(tiny, tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(ModelLoadError, match="not a readable torch checkpoint"):
        load_sam("vit_tiny", corrupt)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_sam("vit_b", tmp_path / "missing.pth")
    with pytest.raises(ModelLoadError, match="is a vit_tiny checkpoint, but sam_type is 'vit_b'"):
        load_sam("vit_b", tiny["sam"])
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ModelLoadError, match="not a segment-anything state dict"):
        load_sam("vit_tiny", tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        ZeroShotDetector(GroundingConfig(model_path=str(tmp_path / "nope"), device="cpu"))
    with pytest.raises(ValueError, match="needs both"):
        GenerateConfig.model_validate({"regions": {"mode": "grounded"}})


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).parent / "mfpo")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=600)


def test_cli_tiny_models_and_grounded_generate(tmp_path):
    models = tmp_path / "models"
    made = _cli("models", "tiny", "--out", str(models))
    assert made.returncode == 0, made.stderr
    items = generate_scenes(SynthConfig(n=3, seed=4, width=128, height=96), tmp_path / "items")
    # annotations removed, so auto mode must go annotations -> grounded -> global
    rows = [json.loads(line) for line in items.read_text().splitlines()]
    for r in rows[1:]:
        r["annotations"] = []
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    run = _cli("generate", str(items), "--out", str(out), "--grounding-model", str(models / "grounding-dino"),
               "--sam-checkpoint", str(models / "sam_vit_tiny.pth"), "--sam-type", "vit_tiny", "--device", "cpu",
               "--config", str(_low_thresholds(tmp_path)))
    assert run.returncode == 0, run.stderr
    records = [ResultRecord.model_validate_json(line) for line in (out / "dataset.jsonl").read_text().splitlines()]
    assert len(records) == 3
    assert {r.source for r in records[0].regions} == {"annotations"}
    for rec in records[1:]:
        sources = {r.source for r in rec.regions}
        assert sources in ({"grounded"}, {"global"})
        assert rec.perturbation.fallback == (sources == {"global"})
        located = {r.keyword for r in rec.regions}
        assert set(rec.keywords_not_found) == {k.text for k in rec.keywords} - located
    bad = _cli("generate", str(items), "--out", str(tmp_path / "bad"), "--grounding-model",
               str(models / "grounding-dino"), "--sam-checkpoint", str(models / "sam_vit_tiny.pth"),
               "--sam-type", "vit_b", "--device", "cpu")
    assert bad.returncode == 2 and "is a vit_tiny checkpoint, but sam_type is 'vit_b'" in bad.stderr
    assert not (tmp_path / "bad" / "dataset.jsonl").exists()


def _low_thresholds(tmp_path: Path) -> Path:
    """Random weights score low: thresholds that let the tiny detector's boxes through."""
    path = tmp_path / "opts.json"
    path.write_text(json.dumps({"regions": {"grounding": {"model_path": "set-by-cli", "box_threshold": 0.0,
                                                          "text_threshold": 0.0},
                                            "sam": {"checkpoint": "set-by-cli", "min_mask_fraction": 0.0}}}))
    return path


def test_sdpa_attention_equals_segment_anything_attention(tiny, scenes):
    eager = SamSegmenter(SamConfig(checkpoint=str(tiny["sam"]), sam_type="vit_tiny", device="cpu",
                                   attention="eager"))
    sdpa = SamSegmenter(SamConfig(checkpoint=str(tiny["sam"]), sam_type="vit_tiny", device="cpu"))
    batch = torch.stack([eager.preprocess(s.image)[0] for s in scenes[:2]])
    np.testing.assert_allclose(sdpa.embed(batch).numpy(), eager.embed(batch).numpy(), atol=1e-5, rtol=1e-4)
