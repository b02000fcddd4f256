"""Rejected-image constructors with models: tiny random-weight CLIP, Stable Diffusion inpainting and LLaVA-1.5
of the real architectures, written by the ``mfpo models`` writers and loaded through the production loaders.

Checked: the writers' folders load with the standard APIs; AdaViP chooses the candidate eq. 9 scores lowest
(against transformers' own CLIP logits), pastes only inside its mask, records every score and falls back to
global noise; the diffusers inpainter is seeded per image (batch-independent); MBPO's features are LLaVA's own
image features, the attack stays in its L-inf budget and raises its objective, the response is the policy's
greedy answer on the stored image; everything is deterministic for a seed; each model loads once per process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mfpo.models.tiny import write_tiny_negative_models, write_tiny_owlv2, write_tiny_sam
from mfpo.models.tiny_llava import IMAGE_SIZE, write_tiny_llava, write_tiny_llava_next
from mfpo.negatives import (
    AdavipConfig,
    ClipScoreConfig,
    DiffusersInpaintConfig,
    MbpoConfig,
    NegativeRequest,
    NegativesConfig,
    construct_negatives,
)
from mfpo.negatives.adavip import adavip_negatives
from mfpo.negatives.clip_score import ClipLoadError, ClipScorer, split_sentences
from mfpo.negatives.diffusers_inpaint import DiffusersInpainter, InpainterLoadError, load_pipeline
from mfpo.negatives.fill import FillInpainter, fill_image
from mfpo.negatives.mbpo import LlavaAttacker, PolicyLoadError, mbpo_negatives
from mfpo.negatives.models import get_attacker, get_clip_scorer, get_inpainter, loaded_models, release_models
from mfpo.negatives.noise import global_negative
from mfpo.perturbation import PerturbationConfig
from mfpo.regions.base import Region, RegionRequest
from mfpo.stages.chunk import ItemError

H, W = 48, 64
NOISE = PerturbationConfig()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("negative-models")
    return {**write_tiny_negative_models(root, seed=0), "llava": write_tiny_llava(root / "llava", seed=0)}


@pytest.fixture(autouse=True)
def _fresh_cache():
    release_models()
    yield
    release_models()


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _request(seed: int = 1, regions: Sequence[Region] | None = None, chosen: str = "A dog sits on the grass. "
             "A red ball lies next to it.", question: str = "What is in the picture?") -> NegativeRequest:
    if regions is None:
        regions = (Region(_box(4, 20, 4, 24), "annotations", "dog"), Region(_box(28, 44, 30, 60), "grounded", "ball"))
    return NegativeRequest(image=_image(seed), seed=seed, regions=tuple(regions), keywords=("dog", "ball"),
                           question=question, chosen=chosen, id=f"item-{seed}")


def _adavip(models: dict[str, Path], **update) -> AdavipConfig:
    clip = ClipScoreConfig(model_path=str(models["clip"]), device="cpu", batch_size=3)
    return AdavipConfig(**({"clip": clip, "mask_dilation": 2} | update))


# -- the tiny writers ---------------------------------------------------------------------------


def test_tiny_writers_load_with_the_standard_apis(models, tmp_path):
    from diffusers import AutoPipelineForInpainting, StableDiffusionInpaintPipeline
    from transformers import AutoProcessor, CLIPModel

    clip = CLIPModel.from_pretrained(models["clip"], local_files_only=True)
    processor = AutoProcessor.from_pretrained(models["clip"], local_files_only=True)
    assert type(processor).__name__ == "CLIPProcessor" and clip.config.text_config.max_position_embeddings == 77
    pipe = AutoPipelineForInpainting.from_pretrained(models["inpainting"], local_files_only=True)
    assert isinstance(pipe, StableDiffusionInpaintPipeline)
    assert pipe.unet.config.in_channels == 9 and pipe.vae.config.latent_channels == 4
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= {p.name for p in models["inpainting"].iterdir()}
    again = write_tiny_negative_models(tmp_path, seed=0)
    for name in ("clip/model.safetensors", "sd-inpainting/unet/diffusion_pytorch_model.safetensors"):
        assert (tmp_path / name).read_bytes() == (models["clip"].parent / name).read_bytes()  # a function of the seed
    assert again["clip"] == tmp_path / "clip"


# -- CLIP (eq. 9) ------------------------------------------------------------------------------------


def test_clip_scores_are_clips_own_logits(models):
    from transformers import AutoProcessor, CLIPModel

    scorer = ClipScorer(ClipScoreConfig(model_path=str(models["clip"]), device="cpu", batch_size=2))
    images = [_image(s) for s in range(3)]
    texts = ["A dog sits on the grass.", "A red ball."]
    ours = scorer.logit_scale * (_unit(scorer.embed_images(images)) @ _unit(scorer.embed_texts(texts)).T)
    model = CLIPModel.from_pretrained(models["clip"]).eval()
    processor = AutoProcessor.from_pretrained(models["clip"])
    with torch.no_grad():
        out = model(**processor(text=texts, images=[Image.fromarray(i) for i in images], return_tensors="pt",
                                padding=True))
    assert np.allclose(ours, out.logits_per_image.numpy(), atol=1e-4)
    long = scorer.embed_texts(["dog " * 300])  # truncated to CLIP's 77 positions, not an error
    assert long.shape == (1, 16)
    with pytest.raises(ClipLoadError, match="cannot load CLIP model"):
        ClipScorer(ClipScoreConfig(model_path=str(models["inpainting"]), device="cpu"))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- AdaViP ------------------------------------------------------------------------------------------


def test_adavip_removes_the_candidate_least_like_the_answer(models):
    config = _adavip(models)
    scorer = get_clip_scorer(config.clip)
    requests = [_request(1), _request(2)]
    results = adavip_negatives(requests, config, FillInpainter(config.fill), scorer, NOISE)
    for request, result in zip(requests, results, strict=True):
        listed = result.details["candidates"]
        assert [c["label"] for c in listed] == ["dog", "ball"] and [c["source"] for c in listed] == [
            "annotations", "grounded"]
        masks = [_box(2, 22, 2, 26), _box(26, 46, 28, 62)]  # dilated by 2
        # eq. 9 by hand: each candidate = the fill of its mask; Score = sum over the answer's 2 sentences
        candidates = [fill_image(request.image, m, config.fill.iterations) for m in masks]
        sentences = scorer.embed_texts(split_sentences(request.chosen, 16))
        expected = (scorer.logit_scale * _unit(scorer.embed_images(candidates)) @ _unit(sentences).T).sum(axis=1)
        assert [c["score"] for c in listed] == pytest.approx(expected.tolist(), abs=1e-4)
        chosen = int(np.argmin(expected))
        assert result.details["chosen"] == chosen and result.details["sentences"] == 2
        assert np.array_equal(result.image, candidates[chosen]) and np.array_equal(result.mask, masks[chosen])
        assert np.array_equal(result.image[~masks[chosen]], request.image[~masks[chosen]])
        assert result.fallback is None and result.kind == "adavip" and result.details["inpainter"] == "fill"
        assert json.loads(json.dumps(result.details)) == result.details  # record-ready
        assert listed[0]["box"] == [2.0, 2.0, 26.0, 22.0] and listed[0]["area"] == pytest.approx(20 * 24 / (H * W))


def test_adavip_falls_back_to_global_noise_with_the_reason(models):
    config = _adavip(models)
    scorer = get_clip_scorer(config.clip)
    nothing, tiny_only = _request(3, regions=()), _request(4, regions=[Region(_box(0, 1, 0, 1), "grounded", "ant")])
    results = adavip_negatives([nothing, tiny_only], config.model_copy(update={"min_mask_fraction": 0.01}),
                               FillInpainter(), scorer, NOISE)
    for request, result in zip([nothing, tiny_only], results, strict=True):
        image, _, _ = global_negative(request.image, request.seed, NOISE)
        assert result.fallback == "global_noise" and np.array_equal(result.image, image) and result.mask.all()
        assert result.details["candidates"] == [] and result.details["chosen"] is None
        json.dumps(result.details)
    assert results[0].details["reason"] == "no usable candidate object (no region, no detection)"
    assert results[1].details["reason"] == "no usable candidate object (all skipped)"
    assert results[1].details["skipped"][0]["reason"].startswith("mask too small")


def test_adavip_is_deterministic_and_batch_independent_with_the_diffusers_inpainter(models):
    settings = DiffusersInpaintConfig(model_path=str(models["inpainting"]), resolution=64, num_inference_steps=2,
                                      batch_size=2, device="cpu")
    config = _adavip(models, inpainter="diffusers", diffusers=settings)
    cfg = NegativesConfig(kinds=["adavip"], adavip=config)
    requests = [_request(1), _request(2), _request(5)]
    first = construct_negatives("adavip", requests, cfg, NOISE)
    again = construct_negatives("adavip", requests, cfg, NOISE)
    alone = construct_negatives("adavip", requests[1:2], cfg, NOISE)[0]
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.image, b.image) and a.details == b.details
    assert np.array_equal(alone.image, first[1].image)  # an item's fill does not depend on its batch
    assert [c["score"] for c in alone.details["candidates"]] == pytest.approx(
        [c["score"] for c in first[1].details["candidates"]], abs=1e-4)
    for request, result in zip(requests, first, strict=True):
        assert result.details["inpainter"] == "diffusers"
        assert np.array_equal(result.image[~result.mask], request.image[~result.mask])
        assert not np.array_equal(result.image[result.mask], request.image[result.mask])
    assert len([k for k in loaded_models() if k[0] == "diffusers"]) == 1


def test_diffusers_inpainter_seeds_each_image(models):
    inpainter = DiffusersInpainter(DiffusersInpaintConfig(model_path=str(models["inpainting"]), resolution=32,
                                                          num_inference_steps=2, batch_size=4, device="cpu"))
    images, mask = [_image(1), _image(1), _image(2)], _box(10, 30, 10, 40)
    out = inpainter.inpaint(images, [mask] * 3, [7, 8, 7])
    assert not np.array_equal(out[0], out[1])  # same image, other seed
    assert np.array_equal(inpainter.inpaint([images[0]], [mask], [7])[0], out[0])
    odd = _image(3)[:30, :50]  # another working size: its own pipeline call
    mixed = inpainter.inpaint([odd, images[2]], [mask[:30, :50], mask], [1, 7])
    assert mixed[0].shape == odd.shape and np.array_equal(mixed[1], out[2])
    with pytest.raises(InpainterLoadError, match=r"no model_index\.json"):
        load_pipeline(str(models["clip"]), "cpu", "float32")


def test_adavip_detector_candidates_come_from_the_grounded_provider(models, tmp_path):
    """The detector's objects go through the loaded grounding + SAM provider (tiny OWLv2 + SAM here), asked in
    label groups; they join the keyword regions as candidates."""
    from mfpo.grounding.config import GroundingConfig
    from mfpo.regions.grounded import get_grounded_provider
    from mfpo.segmentation.config import SamConfig

    owl = write_tiny_owlv2(tmp_path / "owlv2")
    sam = write_tiny_sam(tmp_path / "sam.pth")
    provider = get_grounded_provider(
        GroundingConfig(model_path=str(owl), box_threshold=0.0, device="cpu"),
        SamConfig(checkpoint=str(sam), sam_type="vit_tiny", device="cpu", min_mask_fraction=0.0, max_mask_fraction=1.0))
    calls: list[list[RegionRequest]] = []

    class Recording:
        needs_pixels, name = True, "grounded"

        def locate(self, requests):
            calls.append(list(requests))
            return provider.locate(requests)

    config = _adavip(models, candidates="regions+detector", detect_labels=("cup", "cat", "dog", "tree", "car"),
                     labels_per_query=2, max_mask_fraction=1.0, same_object_iou=1.0)
    requests = [_request(1), _request(2)]
    results = adavip_negatives(requests, config, FillInpainter(), get_clip_scorer(config.clip), NOISE, Recording())
    assert len(calls) == 1 and [r.keywords for r in calls[0]] == [("cup", "cat"), ("dog", "tree"), ("car",)] * 2
    for result in results:
        sources = [c["source"] for c in result.details["candidates"]]
        assert sources[:2] == ["annotations", "grounded"] and "detector" in sources
        assert "dog" not in [c["label"] for c in result.details["candidates"] if c["source"] == "detector"]
    with pytest.raises(ValueError, match="needs the grounded provider"):
        adavip_negatives(requests, config, FillInpainter(), get_clip_scorer(config.clip), NOISE, None)


def test_a_candidate_the_inpainter_rejects_fails_its_own_item(models):
    config = _adavip(models, max_mask_fraction=1.0, mask_dilation=0)
    whole = Region(np.ones((H, W), bool), "global", "everything")  # nothing left to fill it from
    requests = [_request(1), _request(2, regions=[whole]), _request(5)]
    with pytest.raises(ItemError, match="item item-2: inpainting candidate 'everything' failed: nothing to fill from"):
        adavip_negatives(requests, config, FillInpainter(), get_clip_scorer(config.clip), NOISE)


def test_adavip_items_fail_alone(models):
    cfg = NegativesConfig(kinds=["adavip"], adavip=_adavip(models))
    with pytest.raises(ItemError, match="item item-3: AdaViP scores candidate images against the chosen answer"):
        construct_negatives("adavip", [_request(1), _request(3, chosen="")], cfg, NOISE)
    assert loaded_models() == []  # the check comes before any model loads


# -- MBPO ----------------------------------------------------------------------------------------------


def _mbpo(models: dict[str, Path], **update) -> MbpoConfig:
    settings = {"model_path": str(models["llava"]), "device": "cpu", "max_new_tokens": 6, "steps": 3, "batch_size": 2}
    return MbpoConfig(**(settings | update))


def test_mbpo_features_are_llavas_own_image_features(models):
    attacker = LlavaAttacker(str(models["llava"]), "cpu")
    image = _image(1)
    view = attacker.model_view(image)
    assert view.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and view.dtype == np.uint8
    processed = attacker.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
    x = torch.from_numpy(view).permute(2, 0, 1)[None].float() / 255.0
    assert torch.allclose(attacker.normalize(x), processed, atol=1e-5)  # the processor's own pixel values
    with torch.no_grad():
        ours = attacker.image_features(x)
        theirs = attacker.model.model.get_image_features(
            pixel_values=processed, vision_feature_layer=attacker.model.config.vision_feature_layer,
            vision_feature_select_strategy=attacker.model.config.vision_feature_select_strategy)
    theirs = getattr(theirs, "pooler_output", theirs)
    theirs = torch.stack(list(theirs)) if isinstance(theirs, list | tuple) else theirs
    assert ours.shape == (1, 16, 64) and torch.allclose(ours, theirs.float(), atol=1e-5)


@pytest.mark.parametrize("objective", ["features", "answer"])
def test_mbpo_attack_stays_in_budget_raises_its_objective_and_answers(models, objective):
    config = _mbpo(models, objective=objective, random_start=objective == "features")
    attacker = get_attacker(config)
    requests = [_request(1), _request(2), _request(5)]
    results = mbpo_negatives(requests, config, attacker)
    with torch.inference_mode():  # as a stage may call it: the attack turns its gradients back on
        again = mbpo_negatives(requests, config, attacker)
    for request, result, repeat in zip(requests, results, again, strict=True):
        view = attacker.model_view(request.image)
        change = np.abs(result.image.astype(int) - view.astype(int))
        assert result.image.shape == view.shape and 0 < change.max() <= 8 and result.details["linf"] == change.max()
        assert result.details["objective_attacked"] > result.details["objective_clean"]
        assert result.response == attacker.answer([result.image], [request.question], 6)[0]  # the stored image's
        assert isinstance(result.response, str) and result.kind == "mbpo" and result.mask is None
        assert np.array_equal(result.image, repeat.image) and result.response == repeat.response
        assert json.loads(json.dumps(result.details)) == result.details  # record-ready
    assert len([k for k in loaded_models() if k[0] == "mbpo"]) == 1


def test_mbpo_is_batch_independent_and_seeded(models):
    config = _mbpo(models, batch_size=3)
    attacker = get_attacker(config)
    batch = mbpo_negatives([_request(1), _request(2), _request(5)], config, attacker)
    alone = mbpo_negatives([_request(2)], config, attacker)[0]
    # float sums of a batch and of one image may differ in the last bit, which can flip sign(grad) where it is ~0
    assert np.mean(alone.image == batch[1].image) > 0.99
    other = mbpo_negatives([NegativeRequest(**{**_request(2).__dict__, "seed": 3})], config, attacker)[0]
    assert not np.array_equal(other.image, alone.image)  # another seed, another random start


def test_mbpo_errors(models, tmp_path):
    cfg = NegativesConfig(kinds=["mbpo"], mbpo=_mbpo(models))
    with pytest.raises(ItemError, match="item item-2: MBPO generates the rejected answer to the question"):
        construct_negatives("mbpo", [_request(1), _request(2, question=" ")], cfg, NOISE)
    assert loaded_models() == []
    with pytest.raises(PolicyLoadError, match=r"supports LLaVA-1\.5 checkpoints"):
        LlavaAttacker(str(write_tiny_llava_next(tmp_path / "next")), "cpu")
    with pytest.raises(PolicyLoadError, match="cannot load model"):
        LlavaAttacker(str(tmp_path / "missing"), "cpu")


def test_models_load_once_per_process(models):
    clip = ClipScoreConfig(model_path=str(models["clip"]), device="cpu")
    assert get_clip_scorer(clip) is get_clip_scorer(clip)
    assert get_attacker(_mbpo(models)) is get_attacker(_mbpo(models, epsilon=4, step_size=1))  # settings per call
    settings = DiffusersInpaintConfig(model_path=str(models["inpainting"]), device="cpu")
    first = get_inpainter(AdavipConfig(inpainter="diffusers", diffusers=settings))
    second = get_inpainter(AdavipConfig(inpainter="diffusers", diffusers=settings.model_copy(update={"prompt": "x"})))
    assert first.pipe is second.pipe and second.config.prompt == "x"
    assert sorted(k[0] for k in loaded_models()) == ["clip", "diffusers", "mbpo"]


def test_cli_models_tiny_writes_the_constructors_models(tmp_path):
    from typer.testing import CliRunner

    from mfpo.cli import app

    made = CliRunner().invoke(app, ["models", "tiny", "--out", str(tmp_path), "--seed", "1"])
    assert made.exit_code == 0, made.output
    assert f"clip: {tmp_path / 'clip'}" in made.output and f"inpainting: {tmp_path / 'sd-inpainting'}" in made.output
    assert f"sam: {tmp_path / 'sam_vit_tiny.pth'}" in made.output  # the region models as before
    assert ClipScorer(ClipScoreConfig(model_path=str(tmp_path / "clip"), device="cpu")).logit_scale > 0
    inpainter = DiffusersInpainter(DiffusersInpaintConfig(model_path=str(tmp_path / "sd-inpainting"), device="cpu"))
    assert inpainter.multiple == 16  # latents at 1/8 (VAE), halved once by the UNet: sides in multiples of 16
