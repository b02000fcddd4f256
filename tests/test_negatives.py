"""Rejected-image constructors without models: mDPO's crop, the noise kinds, the classical fill, eq. 9's
arithmetic, AdaViP's candidate rules, PGD's projection and the configs, against hand-computed numbers.

The model-backed paths (CLIP, diffusers inpainting, the LLaVA attack) are in test_negatives_models.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pydantic import BaseModel

from mfpo.config import UnknownOptionError
from mfpo.negatives import (
    AdavipConfig,
    ClipScoreConfig,
    MbpoConfig,
    MdpoConfig,
    NegativeRequest,
    NegativesConfig,
    check_request,
    construct_negatives,
)
from mfpo.negatives.adavip import collect_candidates, mask_iou, paste
from mfpo.negatives.base import derive_seed
from mfpo.negatives.clip_score import eq9_scores, least_similar, split_sentences
from mfpo.negatives.config import DiffusersInpaintConfig
from mfpo.negatives.diffusers_inpaint import working_size
from mfpo.negatives.fill import FillInpainter, fill_image, pull, relax
from mfpo.negatives.inpaint import composite, dilate_mask, mask_bbox
from mfpo.negatives.mbpo import pgd_step, project, random_start, to_uint8
from mfpo.negatives.mdpo import (
    CropBox,
    Frame,
    central_crop,
    crop_size,
    frame_image,
    mdpo_negative,
    resized_crop,
    sample_crop_box,
    source_box,
)
from mfpo.negatives.noise import global_negative, mfpo_negative
from mfpo.perturbation import PerturbationConfig, alpha_bar, perturb_in_mask
from mfpo.regions.base import Region
from mfpo.stages.chunk import ItemError
from tests.support.requirements import need_module

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8)


def _box_mask(y0: int, y1: int, x0: int, x1: int, shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# -- mDPO ---------------------------------------------------------------------------------------


def test_crop_size_is_torchvisions_rounding_by_hand():
    assert crop_size(1600.0, 1.0) == (40, 40)
    assert crop_size(1200.0, 4 / 3) == (30, 40)  # w = round(sqrt(1600)) = 40, h = round(sqrt(900)) = 30
    assert crop_size(1200.0, 3 / 4) == (40, 30)


def test_central_crop_fallback_by_hand():
    # W/H = 3 > 4/3: full height, w = round(100 * 4/3) = 133, centred: left = (300 - 133) // 2 = 83
    assert central_crop(100, 300, (3 / 4, 4 / 3)) == CropBox(top=0, left=83, height=100, width=133, fallback=True)
    # W/H = 1/3 < 3/4: full width, h = round(100 / 0.75) = 133, top = (300 - 133) // 2 = 83
    assert central_crop(300, 100, (3 / 4, 4 / 3)) == CropBox(top=83, left=0, height=133, width=100, fallback=True)
    assert central_crop(90, 100, (3 / 4, 4 / 3)) == CropBox(top=0, left=0, height=90, width=100, fallback=True)


def test_resized_crop_is_bilinear_upsampling_by_hand():
    # columns 0, 40, 80, 120 at x = 2..5; a 4x4 crop resized to 8x8 samples x_src = (x + 0.5) / 2 - 0.5
    image = np.zeros((4, 8, 3), dtype=np.uint8)
    image[:, 2:6] = np.array([0, 40, 80, 120], dtype=np.uint8)[None, :, None]
    out = resized_crop(image, CropBox(top=0, left=2, height=4, width=4), 8, 8)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    # x_src = -0.25 (edge: 0), 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25 (edge: 120)
    assert out[0, :, 0].tolist() == [0, 10, 30, 50, 70, 90, 110, 120]
    assert (out == out[:1]).all()  # every row the same


def test_frame_pads_to_a_centred_square_by_hand():
    image = np.full((2, 4, 3), 200, dtype=np.uint8)
    framed, frame = frame_image(image, MdpoConfig(output_size=None, pad_color=(1, 2, 3)))
    assert framed.shape == (4, 4, 3) and frame == Frame(scale=1.0, top=1, left=0, height=4, width=4)
    assert (framed[1:3] == 200).all() and (framed[0] == [1, 2, 3]).all() and (framed[3] == [1, 2, 3]).all()
    framed, frame = frame_image(image, MdpoConfig(output_size=8, pad_color=(1, 2, 3)))
    assert framed.shape == (8, 8, 3) and frame == Frame(scale=2.0, top=2, left=0, height=8, width=8)
    assert (framed[2:6] == 200).all() and (framed[:2] == [1, 2, 3]).all()
    native, frame = frame_image(image, MdpoConfig(frame="native", output_size=8))
    assert native.shape == (8, 16, 3) and frame == Frame(scale=4.0, top=0, left=0, height=8, width=16)


def test_source_box_maps_a_crop_back_by_hand():
    frame = Frame(scale=2.0, top=1, left=0, height=8, width=8)
    # columns 4..5 -> x 2..3; rows 3..4 -> y (3 - 1) / 2 = 1 .. (5 - 1) / 2 = 2
    assert source_box(CropBox(top=3, left=4, height=2, width=2), frame, 10, 10) == (2.0, 1.0, 3.0, 2.0)
    assert source_box(CropBox(top=0, left=0, height=8, width=8), frame, 3, 4) == (0.0, 0.0, 4.0, 3.0)  # clipped


@pytest.mark.parametrize("size", [(64, 64), (50, 90), (97, 31)])
def test_mdpo_crop_is_torchvisions_random_resized_crop_for_the_seed(size):
    """For seed s our crop is the authors' ``v2.RandomResizedCrop(size=image.size()[-2:], scale=(0.01, 0.2))`` after
    ``torch.manual_seed(s)``, pixel for pixel (luka-group/mDPO bunny/modeling_bunny_phi.py crop_images)."""
    v2 = need_module("torchvision.transforms.v2", "pip install 'mfpo[gpu]' (torchvision)")
    image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    config = MdpoConfig(frame="native", output_size=None)
    x = torch.from_numpy(image).permute(2, 0, 1).float()
    state = torch.random.get_rng_state()
    try:
        for seed in range(40):
            ours, details = mdpo_negative(image, seed, config)
            torch.manual_seed(seed)
            theirs = v2.RandomResizedCrop(size=size, scale=(0.01, 0.2))(x)
            assert np.array_equal(ours, theirs.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()), seed
            torch.manual_seed(seed)
            params = v2.RandomResizedCrop(size=size, scale=(0.01, 0.2)).make_params([x])
            assert details["crop"] == params
    finally:
        torch.random.set_rng_state(state)


def test_sample_crop_box_leaves_the_global_rng_alone_and_respects_the_scale():
    before = torch.random.get_rng_state()
    areas = []
    for seed in range(200):
        box = sample_crop_box(336, 336, (0.01, 0.2), (3 / 4, 4 / 3), torch.Generator().manual_seed(seed))
        assert not box.fallback and 0 <= box.top <= 336 - box.height and 0 <= box.left <= 336 - box.width
        areas.append(box.height * box.width / 336**2)
        assert 3 / 4 - 0.05 < box.width / box.height < 4 / 3 + 0.05
    assert torch.equal(torch.random.get_rng_state(), before)
    assert min(areas) > 0.009 and max(areas) < 0.202


def test_mdpo_negative_is_deterministic_and_seeded():
    config = MdpoConfig()
    a, da = mdpo_negative(IMAGE, 5, config)
    b, db = mdpo_negative(IMAGE, 5, config)
    c, _ = mdpo_negative(IMAGE, 6, config)
    assert np.array_equal(a, b) and da == db and not np.array_equal(a, c)
    assert a.shape == (336, 336, 3) and da["framed_size"] == [336, 336] and da["fallback"] is None
    assert 0.01 <= da["area_fraction"] <= 0.2 + 1e-3


# -- MFPO noise and the global ablation ------------------------------------------------------------


def test_global_negative_is_mfpo_noise_on_every_pixel():
    noise = PerturbationConfig()
    image, mask, details = global_negative(IMAGE, 3, noise)
    expected = perturb_in_mask(IMAGE, np.ones((60, 80), bool), alpha_bar(noise), 3)
    assert np.array_equal(image, expected) and mask.all()
    assert details["area_fraction"] == 1.0 and details["noise_step"] == 500


def test_mfpo_negative_noises_the_union_and_falls_back_to_global():
    noise = PerturbationConfig()
    a, b = _box_mask(0, 10, 0, 10), _box_mask(5, 20, 30, 40)
    image, mask, details = mfpo_negative(IMAGE, [a, b], 3, noise)
    assert np.array_equal(mask, a | b) and details["fallback"] is None
    assert np.array_equal(image[~mask], IMAGE[~mask])
    whole, _, _ = global_negative(IMAGE, 3, noise)
    assert np.array_equal(image[mask], whole[mask])  # a pixel's noise depends on seed, size and position only
    fallback, mask, details = mfpo_negative(IMAGE, [np.zeros((60, 80), bool)], 3, noise)
    assert mask.all() and details["fallback"] == "global_noise" and np.array_equal(fallback, whole)


# -- the classical fill -----------------------------------------------------------------------------


def test_pull_averages_the_known_pixels_of_each_block_by_hand():
    values = np.array([[10, 30, 0], [0, 0, 50]], dtype=np.float32)[..., None]
    known = np.array([[True, True, False], [False, False, True]])
    coarse, coarse_known = pull(values, known)
    assert coarse[..., 0].tolist() == [[20.0, 50.0]] and coarse_known.tolist() == [[True, True]]
    coarse, coarse_known = pull(values, np.zeros((2, 3), bool) | np.array([[True, True, False], [False] * 3]))
    assert coarse_known.tolist() == [[True, False]]


def test_relax_is_a_jacobi_sweep_with_zero_flux_borders_by_hand():
    # one row [0, ?, 100]: north = south = itself (zero flux), so x <- (x + x + 100 + 0) / 4
    values = np.array([[0.0, 0.0, 100.0]], dtype=np.float32)[..., None]
    known = np.array([[True, False, True]])
    assert relax(values.copy(), known, 1)[0, 1, 0] == 25.0
    assert relax(values.copy(), known, 2)[0, 1, 0] == 37.5  # (25 + 25 + 100) / 4
    assert relax(values.copy(), known, 60)[0, 1, 0] == pytest.approx(50.0, abs=1e-4)


def test_fill_is_the_harmonic_membrane_by_hand():
    image = np.zeros((3, 3, 3), dtype=np.uint8)
    image[0, 1], image[2, 1], image[1, 0], image[1, 2] = 10, 30, 20, 40
    centre = _box_mask(1, 2, 1, 2, (3, 3))
    assert fill_image(image, centre, 5)[1, 1].tolist() == [25, 25, 25]  # the mean of its four neighbours
    band = np.zeros((4, 5, 3), dtype=np.uint8)
    band[:, 4] = 100
    filled = fill_image(band, _box_mask(0, 4, 1, 4, (4, 5)), 60)
    assert (filled[..., 0] == [0, 25, 50, 75, 100]).all()  # linear between the known columns, every row


def test_fill_keeps_the_outside_and_refuses_a_full_mask():
    mask = _box_mask(10, 40, 20, 50)
    out = fill_image(IMAGE, mask, 10)
    assert np.array_equal(out[~mask], IMAGE[~mask]) and not np.array_equal(out[mask], IMAGE[mask])
    assert np.array_equal(fill_image(IMAGE, np.zeros((60, 80), bool), 10), IMAGE)
    with pytest.raises(ValueError, match="every pixel is masked"):
        fill_image(IMAGE, np.ones((60, 80), bool), 10)
    inpainter = FillInpainter()
    assert np.array_equal(inpainter.inpaint([IMAGE], [mask], [0])[0], inpainter.inpaint([IMAGE], [mask], [99])[0])
    with pytest.raises(ValueError, match="1 images, 2 masks"):
        inpainter.inpaint([IMAGE], [mask, mask], [0])


def test_composite_bbox_and_paste_by_hand():
    base = np.zeros((3, 4, 3), dtype=np.uint8)
    other = np.full((3, 4, 3), 9, dtype=np.uint8)
    mask = np.array([[0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    assert composite(base, other, mask)[..., 0].tolist() == [[0, 9, 0, 0], [0, 9, 9, 0], [0, 0, 0, 0]]
    assert mask_bbox(mask) == (0, 2, 1, 3) and mask_bbox(np.zeros((3, 4), bool)) is None
    assert np.array_equal(paste(base, mask, (0, 2, 1, 3), other[0:2, 1:3]), composite(base, other, mask))


def test_dilate_mask_equals_the_square_max_pool():
    from mfpo.segmentation.masks import dilate

    rng = np.random.default_rng(4)
    for pixels in (0, 1, 3, 15):
        for _ in range(5):
            mask = np.zeros((40, 50), dtype=bool)
            y, x = rng.integers(0, 40), rng.integers(0, 50)
            mask[y : y + rng.integers(1, 12), x : x + rng.integers(1, 12)] = True
            mask &= rng.random((40, 50)) < 0.7  # ragged
            assert np.array_equal(dilate_mask(mask, pixels), dilate(mask, pixels))
    assert dilate_mask(_box_mask(0, 1, 0, 1, (4, 4)), 1).sum() == 4  # clipped at the border
    assert not dilate_mask(np.zeros((4, 4), bool), 2).any()


def test_diffusers_working_size_by_hand():
    assert working_size(480, 640, 512, 64) == (384, 512)  # x0.8
    assert working_size(50, 70, 64, 8) == (48, 64)  # 50 * 64 / 70 = 45.7 -> 6 x 8
    assert working_size(10, 1000, 512, 64) == (64, 512)  # at least one multiple


# -- AdaViP: eq. 9 and the candidate rules --------------------------------------------------------------


def test_eq9_sums_clip_logits_over_sentences_by_hand():
    images = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    sentences = np.array([[1.0, 0.0], [3.0, 3.0]], dtype=np.float32)
    scores = eq9_scores(images, sentences, 10.0)
    # image 0: 10 * (cos 0 + cos 45deg) = 10 + 7.0711; image 1: 10 * (0 + cos 45deg)
    assert scores.tolist() == pytest.approx([10 + 10 / math.sqrt(2), 10 / math.sqrt(2)])
    assert least_similar(scores) == 1
    assert least_similar([3.0, 1.0, 1.0]) == 1  # the first on ties
    with pytest.raises(ValueError, match="no candidate"):
        least_similar([])


def test_split_sentences():
    text = "A dog runs.  It holds 3.5 balls! Is it red?\nYes"
    assert split_sentences(text, 10) == ["A dog runs.", "It holds 3.5 balls!", "Is it red?", "Yes"]
    assert split_sentences(text, 2) == ["A dog runs.", "It holds 3.5 balls!"]
    assert split_sentences("   ", 3) == [] and split_sentences("no end", 3) == ["no end"]


def test_mask_iou_by_hand():
    a, b = _box_mask(0, 2, 0, 2, (4, 4)), _box_mask(0, 2, 1, 3, (4, 4))
    assert mask_iou(a, b) == pytest.approx(2 / 6) and mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0


def _request(regions=(), chosen="A dog on grass.", question="What is it?") -> NegativeRequest:
    return NegativeRequest(image=IMAGE, seed=11, regions=tuple(regions), question=question, chosen=chosen, id="it-1")


def test_candidates_dilate_skip_and_dedupe():
    dog, cat = _box_mask(10, 20, 10, 20), _box_mask(30, 40, 50, 60)
    whole = np.ones((60, 80), bool)
    regions = [Region(dog, "annotations", "dog"), Region(whole, "global"), Region(cat, "grounded", "cat")]
    detections = [Region(_box_mask(10, 20, 10, 21), "grounded", "puppy"),  # IoU 100/110 with dog: same object
                  Region(cat, "grounded", "cat"),  # a keyword region's label
                  Region(_box_mask(0, 1, 0, 1), "grounded", "crumb"),  # 1 px of 4800: too small
                  Region(_box_mask(45, 55, 5, 15), "grounded", "cup")]
    config = AdavipConfig(mask_dilation=2, same_object_iou=0.8)
    kept, skipped = collect_candidates(_request(regions), detections, config)
    assert [(c.label, c.source) for c in kept] == [("dog", "annotations"), ("cat", "grounded"), ("cup", "detector")]
    assert np.array_equal(kept[0].mask, _box_mask(8, 22, 8, 22))  # grown by 2 px on every side
    reasons = {(s["label"], s["source"]): s["reason"] for s in skipped}
    assert reasons[(None, "global")].startswith("dilated mask covers 1.000")
    assert reasons[("puppy", "detector")].startswith("same object as candidate 'dog'")
    assert reasons[("cat", "detector")] == "already a candidate (keyword region)"
    assert reasons[("crumb", "detector")].startswith("mask too small")
    kept, skipped = collect_candidates(_request(regions), detections, config.model_copy(update={"max_candidates": 1}))
    assert [c.label for c in kept] == ["dog"] and sum("max_candidates" in s["reason"] for s in skipped) == 3


# -- MBPO: the PGD arithmetic --------------------------------------------------------------------------


def test_pgd_projection_and_step_by_hand():
    x0 = torch.tensor([0.5, 0.05, 0.98])
    assert project(torch.tensor([0.7, -0.2, 1.5]), x0, 0.1).tolist() == pytest.approx([0.6, 0.0, 1.0])
    step = pgd_step(x0, torch.tensor([2.0, -3.0, 0.0]), x0, 0.04, 0.1)
    assert step.tolist() == pytest.approx([0.54, 0.01, 0.98])  # sign(grad) * 0.04, sign(0) = 0


def test_random_start_is_on_the_8bit_grid_per_item_seed():
    x0 = torch.from_numpy(np.stack([IMAGE[:8, :8], IMAGE[8:16, :8]])).permute(0, 3, 1, 2).float() / 255.0
    a = random_start(x0, 8.0, [1, 2])
    levels = a * 255.0
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert (levels - x0 * 255.0).abs().max() <= 8.0 + 1e-3 and a.min() >= 0 and a.max() <= 1
    alone = random_start(x0[1:], 8.0, [2])
    assert torch.equal(alone[0], a[1])  # an item's start does not depend on its batch
    assert not torch.equal(random_start(x0, 8.0, [1, 3])[1], a[1])
    assert np.array_equal(to_uint8(x0)[0], IMAGE[:8, :8])


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(5, "adavip", 0) == derive_seed(5, "adavip", 0)
    assert len({derive_seed(5, "adavip", k) for k in range(50)} | {derive_seed(6, "adavip", 0)}) == 51
    assert 0 <= derive_seed(2**62, "x") < 2**63


# -- configs, per-item errors and the dispatcher -------------------------------------------------------------


def _configs(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = [model]
    for field in model.model_fields.values():
        for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                found += _configs(arg)
    return found


def test_every_setting_has_help_text():
    classes = _configs(NegativesConfig)
    assert {c.__name__ for c in classes} >= {"MdpoConfig", "AdavipConfig", "MbpoConfig", "ClipScoreConfig",
                                             "DiffusersInpaintConfig", "FillInpaintConfig"}
    missing = [f"{c.__name__}.{n}" for c in classes for n, f in c.model_fields.items() if not f.description]
    assert missing == []


def test_config_validation_says_what_is_missing():
    assert NegativesConfig().kinds == ["mfpo"]
    with pytest.raises(ValueError, match="needs a CLIP model"):
        NegativesConfig(kinds=["adavip"])
    with pytest.raises(ValueError, match="needs the policy model"):
        NegativesConfig(kinds=["mbpo"])
    with pytest.raises(ValueError, match="repeats a kind"):
        NegativesConfig(kinds=["mdpo", "mdpo"])
    with pytest.raises(ValueError, match="is empty"):
        NegativesConfig(kinds=[])
    with pytest.raises(ValueError, match="scale must satisfy"):
        MdpoConfig(scale=(0.3, 0.2))
    with pytest.raises(ValueError, match="must not exceed epsilon"):
        MbpoConfig(epsilon=2, step_size=4)
    with pytest.raises(ValueError, match="needs random_start"):
        MbpoConfig(random_start=False)
    with pytest.raises(ValueError, match=r"needs adavip\.diffusers"):
        AdavipConfig(inpainter="diffusers")
    with pytest.raises(UnknownOptionError, match="valid options"):
        MdpoConfig(crop=0.1)
    ok = NegativesConfig(kinds=["adavip", "mbpo", "mdpo"], adavip={"clip": {"model_path": "/m/clip"}},
                         mbpo={"model_path": "/m/llava"})
    assert ok.adavip.clip == ClipScoreConfig(model_path="/m/clip")
    assert AdavipConfig(inpainter="diffusers", diffusers=DiffusersInpaintConfig(model_path="/m/sd")).diffusers


def test_bad_items_fail_alone_with_a_readable_reason():
    config = NegativesConfig(kinds=["adavip", "mbpo"], adavip={"clip": {"model_path": "/m"}}, mbpo={"model_path": "/m"})
    gray = NegativeRequest(image=IMAGE[..., 0], seed=1, id="gray")
    with pytest.raises(ItemError, match=r"item gray: the image must be uint8 RGB \(H, W, 3\), got uint8 \(60, 80\)"
                       ) as err:
        check_request("mdpo", gray, config)
    assert err.value.stage == "negatives"
    crooked = _request([Region(np.zeros((5, 5), bool), "annotations", "dog")])
    with pytest.raises(ItemError, match="the mask of region 'dog' is"):
        check_request("mfpo", crooked, config)
    with pytest.raises(ItemError, match="AdaViP scores candidate images against the chosen answer, which is empty"):
        check_request("adavip", _request(chosen=" "), config)
    with pytest.raises(ItemError, match="MBPO generates the rejected answer to the question, which is empty"):
        check_request("mbpo", _request(question=""), config)
    with pytest.raises(ItemError, match="item gray"):
        construct_negatives("global", [_request(), gray], config, PerturbationConfig())


def test_construct_the_cpu_kinds_deterministically():
    config = NegativesConfig(kinds=["mfpo", "global", "mdpo"])
    noise = PerturbationConfig()
    requests = [_request([Region(_box_mask(5, 25, 5, 25), "annotations", "dog")]), _request()]
    for kind in config.kinds:
        first = construct_negatives(kind, requests, config, noise)
        again = construct_negatives(kind, requests, config, noise)
        assert [r.kind for r in first] == [kind, kind]
        for a, b in zip(first, again, strict=True):
            assert np.array_equal(a.image, b.image) and a.details == b.details and a.response is None
            assert json.loads(json.dumps(a.details)) == a.details  # record-ready
    mfpo = construct_negatives("mfpo", requests, config, noise)
    assert mfpo[0].fallback is None and mfpo[1].fallback == "global_noise" and mfpo[1].mask.all()
    assert mfpo[0].mask.sum() == 400
    crops = construct_negatives("mdpo", requests, config, noise)
    assert crops[0].image.shape == (336, 336, 3) and crops[0].mask is None and "fallback" not in crops[0].details
