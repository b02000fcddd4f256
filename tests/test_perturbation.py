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
    perturb_in_mask,
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
