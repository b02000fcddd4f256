"""The learning-rate schedule: linear warmup from 0, then linear, cosine or constant (TRL / transformers curves).

A pure function of (settings, step, total steps) rather than a stateful ``LRScheduler``: the
loop sets each optimizer step's rate from it, so a run resumed from a checkpoint continues on
exactly the curve of an uninterrupted run with nothing extra to save, and several processes
(DDP) agree without accelerate's per-process scheduler stepping. The curves are those of
``transformers.get_scheduler`` (``linear``, ``cosine``, ``constant_with_warmup``): update k
(0-based) of a run of ``total`` updates uses ``learning_rate * multiplier(k)``; a test pins
them to transformers' own schedulers.
"""

from __future__ import annotations

import math

from trainer.config import TrainConfig


def warmup_steps(config: TrainConfig, total: int) -> int:
    """Warmup length: ``warmup_steps`` if > 0, else ceil(total * ``warmup_ratio``) (transformers' rule)."""
    return config.warmup_steps if config.warmup_steps > 0 else math.ceil(total * config.warmup_ratio)


def lr_multiplier(config: TrainConfig, step: int, total: int) -> float:
    """Factor of ``learning_rate`` for update ``step`` (0-based) of a run of ``total`` optimizer steps."""
    warmup = warmup_steps(config, total)
    if step < warmup:
        return step / max(1, warmup)
    if config.lr_scheduler == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if config.lr_scheduler == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))  # cosine: half a period, to 0


def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate of update ``step`` (0-based) of ``total``."""
    return config.learning_rate * lr_multiplier(config, step, total)
