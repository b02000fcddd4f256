"""trainer.sft (the SFT stage before preference optimisation) and the testbed's tiny LLaVA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from mfpo.testbed.config import ModelConfig, WorldConfig
from mfpo.testbed.model import parameter_counts, write_testbed_llava
from mfpo.testbed.world import CAPTION_QUESTION, make_scene, world_words
from trainer.collate import collate
from trainer.config import SftConfig
from trainer.data import Example
from trainer.logps import IGNORE_INDEX
from trainer.sft import SftRow, encode_rows, pad_batch, sft_train, step_order

TINY = ModelConfig(patch_size=16, vision_hidden=32, vision_layers=2, vision_heads=2, text_hidden=32, text_layers=1,
                   text_heads=2)
WORLD = WorldConfig()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_testbed_llava(tmp_path_factory.mktemp("tiny") / "init", TINY, world_words(WORLD), seed=0)


@pytest.fixture(scope="module")
def rows() -> tuple[list[SftRow], dict[str, Image.Image]]:
    scenes = [make_scene(WORLD, "sft", i) for i in range(4)]
    images = {s.id: Image.fromarray(s.image) for s in scenes}
    return [SftRow(s.id, s.id, CAPTION_QUESTION, s.caption) for s in scenes], images


def test_the_world_is_single_tokens_and_the_model_has_its_sizes(model_dir: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    tokens = processor.tokenizer.tokenize(make_scene(WORLD, "sft", 3).caption)
    assert all(t.startswith("▁") or t in {",", "."} for t in tokens), tokens
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    counts = parameter_counts(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert model.config.vision_config.hidden_size == 32 and model.config.image_seq_length == TINY.image_tokens == 16


def test_sft_labels_are_the_preference_batches_labels(model_dir: Path, rows: tuple) -> None:  # type: ignore[type-arg]
    """Prompt and image tokens masked, answer + EOS labelled, exactly as trainer.collate does for y_w."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    sft_rows, images = rows
    encoded, pixels = encode_rows(processor, sft_rows[:2], images)
    batch = pad_batch(encoded, pixels, processor.tokenizer.pad_token_id)
    examples = [Example(r.id, r.question, r.answer, r.answer, images[r.image_key], images[r.image_key])
                for r in sft_rows[:2]]
    reference = collate(processor, examples, perturbed=False)
    n = batch["input_ids"].shape[1]
    assert torch.equal(batch["input_ids"], reference["input_ids"][:2, :n])
    assert torch.equal(batch["labels"], reference["labels"][:2, :n])
    assert torch.allclose(batch["pixel_values"], reference["pixel_values"][:2])
    first = batch["labels"][0]
    answer = processor.tokenizer.decode(first[first != IGNORE_INDEX])
    assert answer.startswith(sft_rows[0].answer) and answer.endswith("</s>")


def test_step_order_covers_fractional_epochs_with_seeded_permutations() -> None:
    config = SftConfig(epochs=2.5, batch_size=4, seed=3)
    steps = step_order(10, config)
    assert len(steps) == 7 and all(len(s) == 4 for s in steps)
    flat = [i for s in steps for i in s]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert step_order(10, config) == steps and step_order(10, config.model_copy(update={"seed": 4})) != steps


def test_sft_learns_the_rows_and_writes_a_loadable_model(model_dir: Path, rows: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    sft_rows, images = rows
    config = SftConfig(epochs=60, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, logging_steps=5,
                       vision_epochs=20, vision_batch_size=4)
    summary = sft_train(config, sft_rows, images, str(model_dir), tmp_path / "run")
    assert summary["steps"] == 60 and summary["rows"] == 4 and summary["images"] == 4
    assert summary["last_loss"] < 0.3 * summary["first_loss"]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vision = [x["vision_loss"] for x in lines if "vision_loss" in x]
    assert len(vision) == 4 and vision[-1] < vision[0]
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(summary["final"])
    assert model.config.text_config.hidden_size == 32
