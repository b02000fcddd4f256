"""Settings of the diffusion-noise perturbation (MFPO section 3.1)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mfpo.config import ComponentConfig

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]


class PerturbationConfig(ComponentConfig):
    """Forward-diffusion noise x_t = sqrt(a_t) x + sqrt(1 - a_t) eps inside the region mask."""

    noise_step: int = Field(
        default=500,
        ge=0,
        description="Diffusion timestep t. The MFPO paper finds t=500 (of 1000) best (Figure 8).",
    )
    schedule: BetaSchedule = Field(
        default="linear",
        description="DDPM beta schedule name, as in diffusers' DDPMScheduler(beta_schedule=...).",
    )
    num_train_timesteps: int = Field(
        default=1000, ge=1, description="Length T of the DDPM schedule (Ho et al. 2020 use 1000)."
    )
    beta_start: float = Field(default=1e-4, gt=0, lt=1, description="beta_1 of the linear schedules.")
    beta_end: float = Field(default=0.02, gt=0, lt=1, description="beta_T of the linear schedules.")
    model_resolution: int | None = Field(
        default=336,
        ge=1,
        description=(
            "Shorter side, in pixels, of the image the trained model sees: the noise eps is drawn on a grid "
            "of this resolution (the image's aspect ratio) and upsampled to the image by nearest neighbour, "
            "so the model's processor does not average it away and 'noise_step' means the same corruption "
            "for every source resolution. 336 = LLaVA-1.5 (CLIP ViT-L/14-336); LLaVA-NeXT's anyres grid sees "
            "up to 672. None draws one noise value per native pixel (weaker on large images). Ours, not the "
            "paper's."
        ),
    )
    compensate_resampling: bool = Field(
        default=True,
        description=(
            "Scale the noise so that what survives the processor's bicubic resize to model_resolution has the "
            "DDPM variance 1 - a_t (the resize low-passes even block noise: a 2x downscale keeps ~58% of its "
            "variance). Only with model_resolution set."
        ),
    )

    @model_validator(mode="after")
    def _step_in_schedule(self) -> PerturbationConfig:
        if self.noise_step >= self.num_train_timesteps:
            raise ValueError(
                f"noise_step={self.noise_step} must be < num_train_timesteps={self.num_train_timesteps}"
            )
        if self.beta_end <= self.beta_start:
            raise ValueError("beta_end must be greater than beta_start")
        return self
