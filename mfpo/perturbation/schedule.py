"""The cumulative noise level a_t of a DDPM schedule, taken from diffusers.

MFPO section 3.1 writes alpha_diff,t = prod_{j<=t} beta_diff,j; the standard DDPM
quantity it means (Ho et al. 2020, eq. 4) is a_t = prod_{j<=t} (1 - beta_j), which is
what diffusers' ``DDPMScheduler.alphas_cumprod[t]`` holds and what we use.
"""

from __future__ import annotations

from functools import lru_cache

from mfpo.perturbation.config import PerturbationConfig


@lru_cache(maxsize=32)
def _alphas_cumprod(
    schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float
) -> tuple[float, ...]:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=schedule,
        beta_start=beta_start,
        beta_end=beta_end,
    )
    alphas_cumprod = scheduler.alphas_cumprod  # type: ignore[attr-defined]  # set in __init__
    return tuple(float(a) for a in alphas_cumprod.double().tolist())


def alpha_bar(config: PerturbationConfig) -> float:
    """a_t for ``config.noise_step`` on the configured DDPM schedule (float in (0, 1])."""
    table = _alphas_cumprod(
        config.schedule, config.num_train_timesteps, config.beta_start, config.beta_end
    )
    return table[config.noise_step]
