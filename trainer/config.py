"""Settings of a training run (TRL ``DPOConfig`` style: typed, documented, strict about names)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mfpo.config import ComponentConfig

LossName = Literal["mfpo", "dpo", "mdpo", "adavip"]
NegativesChoice = Literal["auto", "mfpo", "adavip", "mdpo", "mbpo", "global"]
LOSS_NEGATIVES: dict[str, str | None] = {"mfpo": "mfpo", "mdpo": "mdpo", "adavip": "adavip", "dpo": None}
"""Each loss's own rejected images (``negatives="auto"``); dpo is text-only."""


class TrainConfig(ComponentConfig):
    """Loss, curriculum, adapter and optimisation settings of ``mfpo train``."""

    loss: LossName = Field(default="mfpo", description="mfpo | dpo | mdpo | adavip (trainer/losses.py).")
    negatives: NegativesChoice = Field(
        default="auto",
        description="Which rejected images (and, for mbpo, rejected answers) of the dataset to train on: auto = the "
                    "loss's own (mfpo -> MFPO's noise, mdpo -> mDPO's crops, adavip -> AdaViP's object removal; dpo "
                    "uses none), or a kind (mfpo | adavip | mdpo | mbpo | global: MBPO's answers replace the "
                    "rejected text). A kind the dataset lacks fails at load with the reason.",
    )
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
    learning_rate: float = Field(default=2e-5, gt=0.0, description="AdamW peak learning rate (after warmup).")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        default="constant",
        description="Learning rate after warmup: constant, or linear or cosine decay to 0 at the run's last step "
                    "(transformers' get_scheduler curves). Constant by default: a decay gives the last curriculum "
                    "stage (hard) the smallest rates.",
    )
    warmup_ratio: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Fraction of the run's optimizer steps (ceil) over which the learning rate rises linearly from "
                    "0; ignored when warmup_steps > 0.",
    )
    warmup_steps: int = Field(default=0, ge=0, description="Optimizer steps of linear warmup from 0; overrides "
                                                         "warmup_ratio when > 0.")
    max_grad_norm: float = Field(
        default=1.0, ge=0.0,
        description="Clip the global L2 norm of the gradient to this before each optimizer step (0: no clipping); "
                    "the norm before clipping is logged as grad_norm.",
    )
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")
    batch_size: int = Field(default=2, ge=1, description="Items per device per micro-batch (3 sequences each).")
    gradient_accumulation_steps: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations to save memory.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(default="no", description="accelerate mixed precision.")
    max_steps: int | None = Field(
        default=None, ge=1,
        description="Train at most this many optimizer steps, spread over the curriculum stages in proportion to "
                    "their steps (at least one per stage when max_steps >= the number of stages).",
    )
    logging_steps: int = Field(default=1, ge=1, description="Write a metrics line every N optimizer steps.")
    report_to: Literal["tensorboard", "wandb", "all", "none"] = Field(
        default="tensorboard",
        description="Where metrics go besides metrics.jsonl: tensorboard (OUTPUT/tb/), wandb (needs `pip install "
                    "wandb`; WANDB_PROJECT, WANDB_MODE etc. as usual), all (both) or none.",
    )
    run_name: str | None = Field(default=None, description="Run name for wandb (default: the output folder's name).")
    disable_tqdm: bool = Field(default=False, description="No progress bars on stderr (metrics are still logged).")
    eval_fraction: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="Hold out this fraction of the dataset's items (seeded, at least 1) for evaluation instead of "
                    "training; 0: no held-out split (or give --eval-dataset).",
    )
    eval_steps: int = Field(
        default=0, ge=0,
        description="Evaluate the held-out items every N optimizer steps and after the last (0: only after the "
                    "last): loss, text and image reward margins and accuracies, as eval/* metrics.",
    )
    save_steps: int = Field(default=0, ge=0, description="Checkpoint every N steps (0: only at the end).")
    max_answer_tokens: int = Field(default=512, ge=1, description="Longer answers fail the dataset check.")
    seed: int = Field(default=0, ge=0, description="Seed of data order and initialisation.")

    @property
    def negatives_kind(self) -> str | None:
        """The dataset's kind of rejected image this run trains on (None: the text-only dpo with ``auto``)."""
        return LOSS_NEGATIVES[self.loss] if self.negatives == "auto" else self.negatives

    def loss_options(self) -> dict[str, Any]:
        """Keyword options of :func:`trainer.losses.compute_loss` for this config's loss."""
        options: dict[str, Any] = {"beta": self.beta}
        if self.loss == "mfpo":
            options |= {"eta": self.eta, "weights": self.weights}
        elif self.loss == "mdpo":
            options |= {"delta": self.eta}
        return options

    @model_validator(mode="after")
    def _weights_non_negative(self) -> TrainConfig:
        if any(w < 0 for w in self.weights):
            raise ValueError("loss weights must be >= 0")
        return self


class SftConfig(ComponentConfig):
    """Supervised fine-tuning (``trainer.sft``): answer-token cross-entropy on (image, question, answer) rows.

    The LLaVA recipe's instruction-tuning stage (MFPO sec. 4.1: "the first two stages follow standard LLaVA
    training"); the hallucination testbed trains its base model with it from random weights.
    """

    learning_rate: float = Field(default=1e-3, gt=0.0, description="AdamW peak learning rate.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        default="cosine", description="Learning rate after warmup (the curves of TrainConfig.lr_scheduler).")
    warmup_ratio: float = Field(default=0.03, ge=0.0, le=1.0, description="Fraction of the steps warming up.")
    epochs: float = Field(default=1.0, gt=0.0, description="Passes over the rows (fractions allowed).")
    batch_size: int = Field(default=32, ge=1, description="Rows per optimizer step.")
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, ge=0.0, description="Gradient norm clip (0: none).")
    freeze_vision_tower: bool = Field(default=False, description="Keep the CLIP vision tower fixed (False: "
                                                                 "trained with the rest, from scratch).")
    vision_epochs: float = Field(
        default=0.0, ge=0.0,
        description="Passes of vision-tower pretraining over the images before SFT (0: none): predict from the "
                    "mean-pooled features the words said about some images and not others (a bag-of-words head, "
                    "Joulin et al. 2016), standing in for the CLIP pretraining LLaVA starts from; the head is "
                    "dropped after.")
    vision_learning_rate: float = Field(default=1e-3, gt=0.0, description="AdamW rate of the vision pretraining.")
    vision_batch_size: int = Field(default=64, ge=1, description="Images per vision-pretraining step.")
    logging_steps: int = Field(default=10, ge=1, description="Write a metrics line every N steps.")
    seed: int = Field(default=0, ge=0, description="Seed of the row order.")
    threads: int = Field(default=0, ge=0, description="torch CPU threads (0: leave as is).")
