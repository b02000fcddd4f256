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

    @model_validator(mode="after")
    def _step_in_schedule(self) -> PerturbationConfig:
        if self.noise_step >= self.num_train_timesteps:
            raise ValueError(
                f"noise_step={self.noise_step} must be < num_train_timesteps={self.num_train_timesteps}"
            )
        if self.beta_end <= self.beta_start:
            raise ValueError("beta_end must be greater than beta_start")
        return self
