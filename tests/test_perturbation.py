"""Perturbation: the DDPM forward process inside a mask, against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from mfpo.config import UnknownOptionError
from mfpo.perturbation import (
    PerturbationConfig,
    alpha_bar,
    forward_diffuse,
    from_model_space,
    nearest_index,
    noise_field_shape,
    noise_gain,
    perturb_in_mask,
    resampling_gain,
    sample_noise,
    to_model_space,
)


def test_alpha_bar_matches_the_linear_schedule_by_hand():
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    expected = float(np.prod(1.0 - betas[:501]))  # a_t = prod_{j<=t} (1 - beta_j), t = 500
    assert alpha_bar(PerturbationConfig()) == pytest.approx(expected, rel=1e-5)
    assert 0.07 < expected < 0.08  # the t=500 linear schedule keeps ~28% of the signal amplitude


def test_alpha_bar_other_step_and_schedule():
    assert alpha_bar(PerturbationConfig(noise_step=0)) == pytest.approx(1 - 1e-4, rel=1e-6)
    cos = alpha_bar(PerturbationConfig(schedule="squaredcos_cap_v2"))
    assert cos != pytest.approx(alpha_bar(PerturbationConfig()))


def test_config_rejects_bad_values_and_unknown_names():
    with pytest.raises(ValueError, match="noise_step=1000 must be <"):
        PerturbationConfig(noise_step=1000)
    with pytest.raises(UnknownOptionError, match=r"valid options: .*noise_step"):
        PerturbationConfig(noise_stepp=3)


def test_pixel_space_round_trip_and_clamp():
    v = np.array([[[0, 128, 255]]], dtype=np.uint8)
    x = to_model_space(v)
    assert x[0, 0].tolist() == pytest.approx([-1.0, 128 / 127.5 - 1, 1.0], abs=1e-6)
    assert np.array_equal(from_model_space(x), v)
    clamped = from_model_space(np.array([[[1.7, -3.0, -0.2]]], dtype=np.float32))
    assert clamped[0, 0].tolist() == [255, 0, 102]  # round(0.8 * 127.5) = 102


def test_forward_diffuse_hand_computed():
    x = np.array([0.5, -1.0], dtype=np.float32)
    eps = np.array([1.0, 2.0], dtype=np.float32)
    out = forward_diffuse(x, 0.25, eps)
    # sqrt(.25) * .5 + sqrt(.75) * 1 ; sqrt(.25) * -1 + sqrt(.75) * 2
    assert out.tolist() == pytest.approx([0.25 + 0.8660254, -0.5 + 1.7320508], abs=1e-6)
    with pytest.raises(ValueError):
        forward_diffuse(x, 0.0, eps)


def test_forward_diffuse_equals_diffusers_add_noise():
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    x = np.random.default_rng(1).uniform(-1, 1, (4, 5, 3)).astype(np.float32)
    eps = sample_noise(x.shape, 7)
    ours = forward_diffuse(x, alpha_bar(PerturbationConfig()), eps)
    theirs = sched.add_noise(torch.from_numpy(x), torch.from_numpy(eps), torch.tensor([500])).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_perturb_only_inside_mask_and_deterministic():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    mask = np.zeros((16, 20), dtype=bool)
    mask[4:10, 5:12] = True
    a = alpha_bar(PerturbationConfig())
    out = perturb_in_mask(image, mask, a, seed=42)
    assert np.array_equal(out[~mask], image[~mask])  # byte-identical outside
    assert (out[mask] != image[mask]).mean() > 0.9
    # inside: exactly the formula with the seed's full-image noise
    eps = sample_noise(image.shape, 42)
    expected = from_model_space(forward_diffuse(to_model_space(image), a, eps))
    assert np.array_equal(out[mask], expected[mask])
    assert np.array_equal(out, perturb_in_mask(image, mask, a, seed=42))
    assert not np.array_equal(out, perturb_in_mask(image, mask, a, seed=43))


def test_noise_of_a_pixel_does_not_depend_on_the_mask():
    image = np.full((8, 8, 3), 100, dtype=np.uint8)
    small = np.zeros((8, 8), dtype=bool)
    small[2, 3] = True
    big = np.ones((8, 8), dtype=bool)
    a = alpha_bar(PerturbationConfig())
    assert np.array_equal(perturb_in_mask(image, small, a, 5)[2, 3], perturb_in_mask(image, big, a, 5)[2, 3])


def test_perturb_validates_shapes():
    with pytest.raises(ValueError, match="mask shape"):
        perturb_in_mask(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), bool), 0.5, 0)
    with pytest.raises(ValueError, match="uint8"):
        perturb_in_mask(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), bool), 0.5, 0)


# --- noise at the resolution the model sees --------------------------------------------------


def test_noise_field_shape_by_hand():
    assert noise_field_shape(1344, 2016, 336) == (336, 504)  # shorter side -> 336, aspect kept
    assert noise_field_shape(2048, 2048, 336) == (336, 336)
    assert noise_field_shape(1000, 700, 336) == (480, 336)  # round(1000 * 336 / 700) = 480
    assert noise_field_shape(200, 300, 336) == (200, 300)  # already below: one value per pixel
    assert noise_field_shape(1344, 2016, None) == (1344, 2016)
    with pytest.raises(ValueError):
        noise_field_shape(0, 5, 336)


def test_nearest_index_by_hand():
    assert nearest_index(np.arange(10), 10, 4).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert nearest_index(np.arange(6), 6, 6).tolist() == [0, 1, 2, 3, 4, 5]


def test_noise_is_drawn_at_model_resolution_and_upsampled_without_smoothing():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    mask = np.zeros((64, 96), dtype=bool)
    mask[10:50, 20:90] = True
    a = alpha_bar(PerturbationConfig())
    out = perturb_in_mask(image, mask, a, seed=9, model_resolution=16, compensate_resampling=False)
    eps = sample_noise((16, 24, 3), 9)  # shorter side 64 -> 16, aspect 3:2 -> 24
    upsampled = np.repeat(np.repeat(eps, 4, axis=0), 4, axis=1)  # 4x4 blocks share one value
    expected = from_model_space(forward_diffuse(to_model_space(image), a, upsampled))
    assert np.array_equal(out[mask], expected[mask])
    assert np.array_equal(out[~mask], image[~mask])  # byte-identical outside
    banded = perturb_in_mask(image, mask, a, seed=9, model_resolution=16, compensate_resampling=False, chunk_pixels=100)
    assert np.array_equal(banded, out)  # row bands change nothing
    compensated = perturb_in_mask(image, mask, a, seed=9, model_resolution=16)
    gain = noise_gain(64, 96, 16)
    expected = from_model_space(forward_diffuse(to_model_space(image), a, upsampled * np.float32(gain)))
    assert np.array_equal(compensated[mask], expected[mask]) and gain > 1


def test_resampling_gain_by_hand():
    # PIL bicubic (a = -0.5) halving a 2-pixel-block noise: per output pixel the block weights are
    # k(.25) = .867 (own block), (k(.75) + k(1.25)) / 2 = .078 (each neighbour), k(1.75) / 2 = -.0117
    # (next ones), so the variance kept is .867^2 + 2 * .078^2 + 2 * .0117^2 = .764 per axis.
    assert resampling_gain(96, 48, 48) == pytest.approx(0.764, abs=0.01)
    assert resampling_gain(48, 48, 48) == 1.0  # a same-size resize does not filter
    assert noise_gain(96, 96, 48) == pytest.approx(1 / resampling_gain(96, 48, 48), rel=1e-9)
    assert noise_gain(96, 96, None) == 1.0


def _model_input(image, side):
    """What LLaVA-1.5's CLIP processor does to the pixels: shorter side -> side (bicubic), center crop."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = side / min(h, w)
    resized = Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    arr = np.asarray(resized, dtype=np.float64)
    top, left = (arr.shape[0] - side) // 2, (arr.shape[1] - side) // 2
    return arr[top : top + side, left : left + side]


def _smooth_photo(size, seed=0):
    """A smooth synthetic 'photo': a low-resolution random field upsampled to size x size."""
    from PIL import Image

    base = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((size, size), Image.BICUBIC))


def test_corruption_seen_by_the_model_does_not_depend_on_the_source_resolution():
    side = 48  # a small stand-in for 336: the same ratios as 336 / 672 / 1344 / 2048
    a = alpha_bar(PerturbationConfig())

    def corr(size, model_resolution):
        image = _smooth_photo(size)
        out = perturb_in_mask(image, np.ones(image.shape[:2], bool), a, seed=1, model_resolution=model_resolution)
        clean, noised = _model_input(image, side), _model_input(out, side)
        return float(np.corrcoef(clean.ravel(), noised.ravel())[0, 1])

    sizes = (48, 96, 192, 293)
    ours = [corr(s, side) for s in sizes]
    # the 48 px source is noised at exactly the model's resolution: the DDPM value at t
    assert all(abs(c - ours[0]) <= 0.03 for c in ours)
    native = [corr(s, None) for s in sizes]  # the earlier behaviour: averaged away on big sources
    assert native[-1] - native[0] > 0.2


def test_perturb_never_allocates_full_resolution_noise():
    import tracemalloc

    image = np.zeros((2000, 3000, 3), dtype=np.uint8)
    mask = np.ones((2000, 3000), dtype=bool)
    a = alpha_bar(PerturbationConfig())
    tracemalloc.start()
    perturb_in_mask(image, mask, a, seed=0, chunk_pixels=200_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full_float_noise = image.size * 4  # 72 MB of float32
    assert peak - image.nbytes < full_float_noise / 2
