"""MFPO inside TRL (trainer/trl_mfpo.py) on the tiny LLaVA and `mfpo export --format trl`: the loss is
trainer/losses.py's on the same batch and reference log-probs, the rejected image reaches the model, and
two steps run through TRL's own scheduler, logging and callbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
from peft import LoraConfig
from transformers import AutoProcessor, LlavaForConditionalGeneration, TrainerCallback
from trl import DPOTrainer

from mfpo.exporters import export_dataset
from mfpo.models.tiny_llava import write_tiny_llava
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.embedded import run_generate
from mfpo.synth import SynthConfig, generate_scenes
from trainer import losses
from trainer.logps import IGNORE_INDEX, sequence_logps
from trainer.trl_mfpo import DataCollatorForMFPO, MFPOConfig, MFPOTrainer

LOSS_OPTIONS = {"beta": 0.5, "eta": 0.3, "mfpo_weights": [1.0, 0.7, 0.2]}


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("trl")
    items = generate_scenes(SynthConfig(n=4, seed=3, width=64, height=64), root / "items")
    run_generate(items, root / "dataset", GenerateConfig.model_validate({"regions": {"mode": "annotations"}}),
                 workers=1, gallery=False)
    parquet = export_dataset(root / "dataset", "trl", root / "export")
    dataset = datasets.load_dataset("parquet", data_files=str(parquet), split="train")
    return {"root": root, "model": write_tiny_llava(root / "llava"), "dataset": dataset}


def _trainer(assets: dict[str, Any], tmp_path: Path, loss: str = "mfpo", dataset: Any = None,
             **options: Any) -> MFPOTrainer:
    """A trainer whose LoRA starts random (B != 0), so the policy already differs from the reference."""
    torch.manual_seed(0)
    args = MFPOConfig(output_dir=str(tmp_path / "out"), mfpo_loss=loss, per_device_train_batch_size=2,
                      report_to=[], use_cpu=True, save_strategy="no", logging_steps=1, **options)
    return MFPOTrainer(
        model=LlavaForConditionalGeneration.from_pretrained(str(assets["model"])), args=args,
        train_dataset=assets["dataset"] if dataset is None else dataset,
        processing_class=AutoProcessor.from_pretrained(str(assets["model"])),
        peft_config=LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "v_proj"]),
    )


def _reference_loss(trainer: MFPOTrainer, batch: dict[str, torch.Tensor], loss: str) -> torch.Tensor:
    """The loss from full logits and trainer/logps.py (no fused head), the policy and its adapter-free
    reference, passed positionally to the loss function of trainer/losses.py."""
    model = trainer.model
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    with torch.no_grad():
        policy = sequence_logps(model(**inputs).logits, labels)
        with model.disable_adapter():
            reference = sequence_logps(model(**inputs).logits, labels)
    assert (policy - reference).abs().min() > 1e-3  # a reference pass that kept the adapter would show here
    beta, eta, weights = LOSS_OPTIONS["beta"], LOSS_OPTIONS["eta"], tuple(LOSS_OPTIONS["mfpo_weights"])
    if loss == "dpo":
        pc, pr = policy.chunk(2)
        rc, rr = reference.chunk(2)
        return losses.dpo_loss(pc, pr, rc, rr, beta=beta)[0]
    pc, pr, pp = policy.chunk(3)
    rc, rr, rp = reference.chunk(3)
    if loss == "mfpo":
        return losses.mfpo_loss(pc, pr, pp, rc, rr, rp, beta=beta, eta=eta, weights=weights)[0]
    if loss == "mdpo":
        return losses.mdpo_loss(pc, pr, pp, rc, rr, rp, beta=beta, delta=eta)[0]
    return losses.adavip_loss(pc, pr, pp, rc, rr, rp, beta=beta)[0]


@pytest.mark.parametrize("loss", ["mfpo", "dpo", "mdpo", "adavip"])
def test_the_loss_is_trainer_losses_on_the_same_batch_and_reference(assets, tmp_path, loss):
    trainer = _trainer(assets, tmp_path, loss, **LOSS_OPTIONS)
    trainer.model.eval()
    batch = trainer.data_collator([assets["dataset"][i] for i in range(3)])
    assert batch["input_ids"].shape[0] == 3 * (2 if loss == "dpo" else 3)
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, batch)
    want = _reference_loss(trainer, batch, loss)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (float(got), float(want))
    logged = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    assert {"rewards/margins", "rewards/accuracies", "logps/chosen", "entropy"} <= set(logged)
    if loss == "mfpo":
        assert {"loss/text", "loss/image", "loss/margin", "rewards/image_margin"} <= set(logged)


def test_the_third_sequence_sees_the_rejected_image(assets, tmp_path):
    rows = [assets["dataset"][i] for i in range(2)]
    processor = AutoProcessor.from_pretrained(str(assets["model"]))
    batch = DataCollatorForMFPO(processor=processor)(rows)
    pixels = processor.image_processor([r["images"][0] for r in rows], return_tensors="pt")["pixel_values"]
    rejected = processor.image_processor([r["rejected_images"][0] for r in rows], return_tensors="pt")["pixel_values"]
    assert not torch.equal(pixels, rejected)
    assert torch.equal(batch["pixel_values"], torch.cat([pixels, pixels, rejected]))
    chosen, _, perturbed = batch["input_ids"].chunk(3)
    assert torch.equal(chosen, perturbed)  # the same text: only the image differs (MFPO eq. 6)
    answers = batch["input_ids"][batch["completion_mask"].bool()]
    assert processor.tokenizer.decode(answers[: len(answers) // 3]).strip().startswith(
        rows[0]["chosen"][0]["content"][0]["text"][:20])


def test_two_steps_train_through_trls_scheduler_logging_and_callbacks(assets, tmp_path):
    class Seen(TrainerCallback):
        logs: list[dict[str, float]] = []  # noqa: RUF012

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs or {}))

    trainer = _trainer(assets, tmp_path, "mfpo", max_steps=2, learning_rate=1e-3, **LOSS_OPTIONS)
    trainer.add_callback(Seen())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2] and trainer.state.global_step == 2
    assert [h["learning_rate"] for h in steps] == pytest.approx([1e-3, 5e-4])  # TRL's linear schedule
    for h in steps:
        assert {"loss/image", "loss/margin", "rewards/image_margin", "rewards/margins", "logps/chosen_perturbed",
                "num_tokens"} <= set(h)
        parts = h["loss/text"] + 0.7 * h["loss/image"] + 0.2 * h["loss/margin"]
        assert h["loss"] == pytest.approx(parts, rel=1e-4)  # w_t L_text + w_i L_image + w_m L_margin
    assert [log["loss"] for log in Seen.logs if "loss" in log] == [h["loss"] for h in steps]
    moved = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved and all("lora_" in n for n in moved)


def test_trls_dpo_trainer_drops_the_rejected_image_and_ours_keeps_it(assets, tmp_path):
    ours = _trainer(assets, tmp_path)
    ours._set_signature_columns_if_needed()
    assert "rejected_images" in ours._signature_columns
    stock = DPOTrainer.__new__(DPOTrainer)
    stock._signature_columns, stock._is_vision_dataset = None, True
    stock._set_signature_columns_if_needed()
    assert "rejected_images" not in stock._signature_columns


def test_options_the_loss_would_ignore_and_missing_rejected_images_are_refused(assets, tmp_path):
    with pytest.raises(ValueError, match="loss_type"):
        MFPOConfig(output_dir=str(tmp_path), use_cpu=True, loss_type=["hinge"])
    with pytest.raises(ValueError, match="unknown mfpo_loss"):
        MFPOConfig(output_dir=str(tmp_path), use_cpu=True, mfpo_loss="ipo")
    with pytest.raises(ValueError, match="mfpo_weights"):
        MFPOConfig(output_dir=str(tmp_path), use_cpu=True, mfpo_weights=[1.0, -1.0, 1.0])
    text_only = assets["dataset"].remove_columns(["rejected_images"])
    with pytest.raises(ValueError, match="rejected_images"):
        _trainer(assets, tmp_path, "mfpo", dataset=text_only)
    assert _trainer(assets, tmp_path, "dpo", dataset=text_only).parts == 2
