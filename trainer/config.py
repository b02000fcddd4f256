"""Settings of a training run (TRL ``DPOConfig`` style: typed, documented, strict about names)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mfpo.config import ComponentConfig

LossName = Literal["mfpo", "dpo", "mdpo", "adavip"]


class TrainConfig(ComponentConfig):
    """Loss, curriculum, adapter and optimisation settings of ``mfpo train``."""

    loss: LossName = Field(default="mfpo", description="mfpo | dpo | mdpo | adavip (trainer/losses.py).")
    beta: float = Field(default=0.1, gt=0.0, description="beta of the implicit reward beta * log(pi / pi_ref).")
    eta: float = Field(default=0.0, description="Margin eta of MFPO's L_margin (eq. 7); mDPO's anchor delta.")
    weights: tuple[float, float, float] = Field(
        default=(1.0, 1.0, 1.0), description="(w_t, w_i, w_m) of MFPO's text, image and margin terms."
    )
    curriculum: Literal["easy-to-hard", "none"] = Field(
        default="easy-to-hard", description="Entropy tertiles trained easy -> medium -> hard (sec. 3.3), or all."
    )
    epochs_per_stage: int = Field(default=1, ge=1, description="Passes over each curriculum stage.")
    lora: bool = Field(default=True, description="Train LoRA adapters (peft) instead of all weights.")
    lora_r: int = Field(default=8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(default=16, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    lora_target_modules: tuple[str, ...] = Field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"), description="Module names that get adapters."
    )
    freeze_vision_tower: bool = Field(default=True, description="Keep the vision encoder's weights fixed.")
    learning_rate: float = Field(default=2e-5, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")
    batch_size: int = Field(default=2, ge=1, description="Items per device per micro-batch (3 sequences each).")
    gradient_accumulation_steps: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations to save memory.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(default="no", description="accelerate mixed precision.")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps.")
    logging_steps: int = Field(default=1, ge=1, description="Write a metrics line every N optimizer steps.")
    save_steps: int = Field(default=0, ge=0, description="Checkpoint every N steps (0: only at the end).")
    max_answer_tokens: int = Field(default=512, ge=1, description="Longer answers fail the dataset check.")
    seed: int = Field(default=0, ge=0, description="Seed of data order and initialisation.")

    @model_validator(mode="after")
    def _weights_non_negative(self) -> TrainConfig:
        if any(w < 0 for w in self.weights):
            raise ValueError("loss weights must be >= 0")
        return self
