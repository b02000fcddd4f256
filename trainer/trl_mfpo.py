"""MFPO inside TRL: a ``DPOTrainer`` that trains on ``mfpo export --format trl`` with MFPO's image and margin terms.

TRL's own ``DPOTrainer`` (checked with trl 1.16) keeps only ``prompt``/``chosen``/``rejected``/``images``
of a vision dataset (``_set_signature_columns_if_needed``), so on our export it trains plain text DPO
and never sees the rejected image m'. :class:`MFPOTrainer` keeps TRL's model and PEFT handling,
optimizer, scheduler, logging, callbacks and checkpoints, and changes three things:

* the ``rejected_images`` column is kept (``_set_signature_columns_if_needed``);
* :class:`DataCollatorForMFPO` builds, like TRL's ``DataCollatorForVisionPreference`` (same chat
  template, left-padded prompts, right-padded completions, ``flush_left``, truncation), 3B sequences:
  rows [0, B) (prompt, y_w | m), [B, 2B) (prompt, y_l | m), [2B, 3B) (prompt, y_w | m') -- 2B for
  the text-only ``dpo``;
* ``_compute_loss`` runs one policy forward and one reference forward (adapters disabled, TRL's
  ``use_adapter``, or the reference model) over them with TRL's fused LM head, sums each
  sequence's answer log-probs, and hands them to :func:`trainer.losses.compute_loss` -- the same
  pure functions ``mfpo train`` uses: ``mfpo`` (MFPO eq. 5-7: w_t L_text + w_i L_image + w_m L_margin),
  ``mdpo`` (DPO + conditional + anchor), ``adavip`` (AdaViP eq. 11) or ``dpo`` (eq. 5).

Every metric of the loss (``loss/image``, ``rewards/image_margin``, ...) and TRL's usual ones
(``rewards/margins``, ``rewards/accuracies``, ``logps/*``, ``entropy``, ``num_tokens``) go through
TRL's ``log``. Not carried over: the curriculum of ``mfpo train`` (TRL samples the dataset
uniformly) and the precomputed reference pass (TRL computes the reference on the fly for vision data).

Usage (``pip install 'mfpo[trl]'``)::

    dataset = datasets.load_dataset("parquet", data_files="export/train.parquet", split="train")
    args = MFPOConfig(output_dir="out", mfpo_loss="mfpo", beta=0.1, eta=0.0, mfpo_weights=[1, 1, 1])
    MFPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                peft_config=LoraConfig(...)).train()
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from trl import DPOConfig, DPOTrainer
from trl.data_utils import apply_chat_template, is_conversational, prepare_multimodal_messages
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference
from trl.trainer.utils import flush_left, pad, use_adapter

from trainer.losses import LOSSES, NEEDS_PERTURBED, compute_loss

REJECTED_IMAGES = "rejected_images"
_NOT_MODEL_INPUTS = frozenset({"completion_mask"})


@dataclass
class MFPOConfig(DPOConfig):
    """``DPOConfig`` plus the loss of trainer/losses.py. TRL's own loss options (``loss_type``,
    ``f_divergence_type``, ``ld_alpha``, ``label_smoothing``, ``use_weighting``) must stay at their
    defaults: the loss is :func:`trainer.losses.compute_loss`'s, and a setting it would ignore is an error."""

    mfpo_loss: str = field(default="mfpo", metadata={"help": "mfpo | dpo | mdpo | adavip (trainer/losses.py)."})
    eta: float = field(default=0.0, metadata={"help": "Margin eta of MFPO's L_margin (eq. 7); mDPO's anchor delta."})
    mfpo_weights: list[float] = field(
        default_factory=lambda: [1.0, 1.0, 1.0],
        metadata={"help": "(w_t, w_i, w_m): weights of MFPO's text, image and margin terms."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mfpo_loss not in LOSSES:
            raise ValueError(f"unknown mfpo_loss {self.mfpo_loss!r}; valid losses: {', '.join(LOSSES)}")
        if len(self.mfpo_weights) != 3 or any(w < 0 for w in self.mfpo_weights):
            raise ValueError(f"mfpo_weights must be three weights >= 0 (w_t, w_i, w_m), got {self.mfpo_weights}")
        ignored = {
            "loss_type": self.loss_type != ["sigmoid"],
            "f_divergence_type": self.f_divergence_type != "reverse_kl",
            "ld_alpha": self.ld_alpha is not None,
            "label_smoothing": self.label_smoothing != 0.0,
            "use_weighting": self.use_weighting,
            "precompute_ref_log_probs": self.precompute_ref_log_probs,
        }
        if any(ignored.values()):
            raise ValueError(f"MFPOTrainer computes trainer/losses.py's {self.mfpo_loss!r} loss; leave these "
                             f"DPOConfig options at their defaults: {', '.join(k for k, v in ignored.items() if v)}")

    def loss_options(self) -> dict[str, Any]:
        """Keyword options of the chosen loss function (as ``mfpo train`` passes them)."""
        options: dict[str, Any] = {"beta": self.beta}
        if self.mfpo_loss == "mfpo":
            options |= {"eta": self.eta, "weights": tuple(self.mfpo_weights)}
        elif self.mfpo_loss == "mdpo":
            options |= {"delta": self.eta}
        return options


@dataclass
class DataCollatorForMFPO(DataCollatorForVisionPreference):
    """TRL's vision preference collator with a third sequence per item: the chosen answer under the
    rejected image (``rejected_images``, or ``rejected_image``). Rows: chosen | m, rejected | m, chosen | m'."""

    perturbed: bool = True

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if self.pad_to_multiple_of is not None:
            raise NotImplementedError("pad_to_multiple_of is not implemented for vision preference data")
        examples = [dict(e) for e in examples]
        for example in examples:
            if "image" in example:
                example["images"] = [example.pop("image")]
            if "rejected_image" in example:
                example[REJECTED_IMAGES] = [example.pop("rejected_image")]
            if self.perturbed and not example.get(REJECTED_IMAGES):
                raise ValueError(f"an example has no {REJECTED_IMAGES}: export the dataset with "
                                 "`mfpo export --format trl`, or train with mfpo_loss='dpo'")
        images = [e["images"] for e in examples] * 2
        if self.perturbed:
            images += [e[REJECTED_IMAGES] for e in examples]
        if is_conversational(examples[0]):
            for example in examples:
                example["prompt"] = prepare_multimodal_messages(example["prompt"], images=example["images"])
                example["chosen"] = prepare_multimodal_messages(example["chosen"])
                example["rejected"] = prepare_multimodal_messages(example["rejected"])
            examples = [apply_chat_template(e, self.processor) for e in examples]
        parts = 3 if self.perturbed else 2
        prompts = [e["prompt"] for e in examples] * parts
        completions = [[e["chosen"] for e in examples], [e["rejected"] for e in examples]]
        if self.perturbed:
            completions.append(completions[0])
        common = {"padding": True, "return_tensors": self.return_tensors, "add_special_tokens": False}
        processed = self.processor(images=images, text=prompts, padding_side="left", **common)
        answers = [self.processor(text=texts, padding_side="right", **common) for texts in completions]
        pad_id = self.processor.tokenizer.pad_token_id or self.processor.tokenizer.eos_token_id
        completion_ids = torch.cat(tuple(pad([a["input_ids"] for a in answers], padding_value=pad_id)))
        completion_mask = torch.cat(tuple(pad([a["attention_mask"] for a in answers], padding_value=0)))
        prompt_mask = processed["attention_mask"]
        input_ids = torch.cat((processed["input_ids"], completion_ids), dim=1)
        attention_mask = torch.cat((prompt_mask, completion_mask), dim=1)
        completion_mask = torch.cat((torch.zeros_like(prompt_mask), completion_mask), dim=1)
        extra = {}
        if "mm_token_type_ids" in processed:  # Qwen2.5-VL style: image positions of the prompt
            extra["mm_token_type_ids"] = torch.cat(
                (processed["mm_token_type_ids"], torch.zeros_like(completion_ids)), dim=1)
        if "token_type_ids" in processed:  # Gemma style
            extra["token_type_ids"] = torch.cat(
                (processed["token_type_ids"],
                 torch.cat(tuple(pad([a["token_type_ids"] for a in answers], padding_value=0)))), dim=1)
        attention_mask, input_ids, completion_mask, *rest = flush_left(
            attention_mask, input_ids, completion_mask, *extra.values())
        extra = dict(zip(extra, rest, strict=True))
        if self.max_length is not None:
            input_ids, attention_mask, completion_mask = (
                t[:, : self.max_length] for t in (input_ids, attention_mask, completion_mask))
            extra = {k: v[:, : self.max_length] for k, v in extra.items()}
        output = processed  # holds pixel_values (and image_sizes, ...) of the parts * B images
        output["input_ids"], output["attention_mask"], output["completion_mask"] = (
            input_ids, attention_mask, completion_mask)
        output.update(extra)
        return output


def sequence_logps_fused(model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer log-probs (N,) and per-token entropy (N, T-1) of every row, through TRL's fused LM head
    (``model(..., labels=..., fused_lm_head=True)``: answer positions only, no (N, T, V) logits)."""
    kwargs = {k: v for k, v in inputs.items() if k not in _NOT_MODEL_INPUTS}
    kwargs["use_cache"] = False
    mask = inputs["completion_mask"]
    labels = inputs["input_ids"].masked_fill(mask == 0, -100)
    out = model(**kwargs, labels=labels, fused_lm_head=True)
    seq_len = mask.size(1) - 1
    entropy = out.entropy[:, -seq_len:] if getattr(out, "entropy", None) is not None else None
    return out.log_probs[:, -seq_len:].sum(dim=1), entropy


class MFPOTrainer(DPOTrainer):
    """``DPOTrainer`` whose loss is trainer/losses.py's MFPO (or mDPO / AdaViP / DPO) on text and image pairs."""

    _tag_names: ClassVar[list[str]] = ["trl", "dpo", "mfpo"]
    _name = "MFPO"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("args")
        if config is None and len(args) > 2:
            config = args[2]
        if not isinstance(config, MFPOConfig):
            raise TypeError("MFPOTrainer needs args=MFPOConfig(...) (DPOConfig plus mfpo_loss, eta, mfpo_weights)")
        self.parts = 3 if config.mfpo_loss in NEEDS_PERTURBED else 2
        dataset = kwargs.get("train_dataset")
        if dataset is not None and self.parts == 3:
            sample = next(iter(dataset))
            if REJECTED_IMAGES not in sample and "rejected_image" not in sample:
                raise ValueError(f"mfpo_loss={config.mfpo_loss!r} needs a {REJECTED_IMAGES} column (the rejected "
                                 f"image m'); the dataset has {sorted(sample)}: use `mfpo export --format trl`")
        custom_collator = kwargs.get("data_collator") is not None
        super().__init__(*args, **kwargs)
        if not custom_collator:
            if not self._is_vision_dataset:
                raise ValueError("MFPOTrainer trains on vision preference data (an images column)")
            self.data_collator = DataCollatorForMFPO(processor=self.processing_class, max_length=self.args.max_length,
                                                     perturbed=self.parts == 3)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None:
            self._signature_columns = [*self._signature_columns, REJECTED_IMAGES, "rejected_image"]

    def _reference_context(self) -> Any:
        if self.ref_model is None:
            unwrapped = self.accelerator.unwrap_model(self.model)
            return use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        return contextlib.nullcontext()

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        if return_outputs:
            raise NotImplementedError("MFPOTrainer returns no logits (TRL's fused LM head computes none)")
        mode = "train" if self.model.training else "eval"
        args: MFPOConfig = self.args  # type: ignore[assignment]
        logps, entropy = sequence_logps_fused(model, inputs)
        with torch.no_grad(), disable_gradient_checkpointing(self.model, args.gradient_checkpointing_kwargs):
            if self.ref_model is None:
                with self._reference_context():
                    ref_logps, _ = sequence_logps_fused(self.model, inputs)
            else:
                ref_logps, _ = sequence_logps_fused(self.ref_model, inputs)
        names = ("chosen", "rejected", "chosen_perturbed")[: self.parts]
        policy = dict(zip(names, logps.chunk(self.parts), strict=True))
        reference = dict(zip(names, ref_logps.chunk(self.parts), strict=True))
        loss, metrics = compute_loss(args.mfpo_loss, {**{f"policy_{k}_logps": v for k, v in policy.items()},
                                                      **{f"ref_{k}_logps": v for k, v in reference.items()}},
                                     **args.loss_options())
        self._record(mode, inputs, metrics, policy, reference, entropy)
        return loss

    def _record(self, mode: str, inputs: dict[str, Any], metrics: dict[str, float], policy: dict[str, torch.Tensor],
                reference: dict[str, torch.Tensor], entropy: torch.Tensor | None) -> None:
        """The loss's metrics and TRL's usual DPO ones, averaged over processes, into TRL's metric log."""
        store = self._metrics[mode]
        gather = self.accelerator.gather_for_metrics
        device = self.accelerator.device
        for key, value in metrics.items():
            store[key].append(gather(torch.tensor(value, device=device)).mean().item())
        chosen = self.beta * (policy["chosen"] - reference["chosen"]).detach()
        rejected = self.beta * (policy["rejected"] - reference["rejected"]).detach()
        store["rewards/margins"].append(gather(chosen - rejected).mean().item())
        store["rewards/accuracies"].append(gather((chosen > rejected).float()).mean().item())
        for key, value in policy.items():
            store[f"logps/{key}"].append(gather(value.detach()).mean().item())
        mask = inputs["completion_mask"][:, 1:]
        if entropy is not None:
            total = gather(mask.sum()).sum()
            store["entropy"].append((gather((entropy.detach() * mask).sum()).sum() / total.clamp(min=1)).item())
        if mode == "train":
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item() // self._tp_size
        store["num_tokens"] = [self._total_train_tokens]
