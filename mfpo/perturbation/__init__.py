"""Diffusion-noise perturbation of image regions (MFPO section 3.1)."""

from mfpo.perturbation.config import PerturbationConfig
from mfpo.perturbation.noise import (
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
from mfpo.perturbation.schedule import alpha_bar

__all__ = [
    "PerturbationConfig",
    "alpha_bar",
    "forward_diffuse",
    "from_model_space",
    "nearest_index",
    "noise_field_shape",
    "noise_gain",
    "perturb_in_mask",
    "resampling_gain",
    "sample_noise",
    "to_model_space",
]
