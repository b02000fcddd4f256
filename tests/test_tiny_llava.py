"""Tiny random-weight LLaVA-1.5: written offline, loaded through the standard API, trainable and generates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file

from mfpo.models.tiny_llava import (
    CHAT_TEMPLATE,
    IMAGE_SIZE,
    IMAGE_TOKEN,
    IMAGE_TOKENS,
    LLAVA_BARE_WORDS,
    LLAVA_WORDS,
    PAD_TOKEN,
    build_tiny_llava_config,
    learn_llama_bpe,
    write_tiny_llava,
)
from mfpo.synth import SynthConfig, make_scene


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llava(tmp_path_factory.mktemp("llava"), seed=0)


@pytest.fixture(scope="module")
def processor(folder: Path) -> Any:
    return transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)


@pytest.fixture()
def model(folder: Path) -> Any:
    return transformers.LlavaForConditionalGeneration.from_pretrained(folder, local_files_only=True)


def _image(seed: int, h: int = 48, w: int = 80) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _conversation(question: str, answer: str | None = None) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


def _batch(processor: Any) -> tuple[Any, list[str]]:
    texts = [
        processor.apply_chat_template(_conversation("What is in the picture?", "A red ball next to a blue cup.")),
        processor.apply_chat_template(_conversation("Describe this image in detail.", "Two stars.")),
    ]
    inputs = processor(images=[_image(0), _image(1, 90, 60)], text=texts, return_tensors="pt", padding=True)
    return inputs, texts


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_folder_layout_and_size(folder: Path) -> None:
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
        "chat_template.jinja",
    } <= names
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5_000_000


def test_loads_like_a_llava_hf_checkpoint(folder: Path, processor: Any, model: Any) -> None:
    assert type(processor).__name__ == "LlavaProcessor"
    assert type(processor.image_processor).__name__ == "CLIPImageProcessor"
    tok = processor.tokenizer
    cfg = model.config
    assert cfg.model_type == "llava" and cfg.text_config.model_type == "llama"
    assert cfg.vision_config.model_type == "clip_vision_model"
    assert (cfg.vision_feature_layer, cfg.vision_feature_select_strategy) == (-2, "default")
    assert cfg.projector_hidden_act == "gelu"
    assert cfg.image_token_index == tok.convert_tokens_to_ids(IMAGE_TOKEN) == processor.image_token_id
    assert cfg.text_config.vocab_size == len(tok) == model.get_input_embeddings().num_embeddings
    assert (tok.unk_token, tok.bos_token, tok.eos_token, tok.pad_token) == ("<unk>", "<s>", "</s>", PAD_TOKEN)
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert cfg.text_config.pad_token_id == tok.pad_token_id
    assert tok.padding_side == "right"
    assert processor.chat_template == CHAT_TEMPLATE
    assert processor.image_processor.crop_size == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_chat_template_is_llava_1_5(processor: Any) -> None:
    conv = _conversation("What is in the picture?", "A red ball.")
    assert processor.apply_chat_template(conv) == "USER: <image>\nWhat is in the picture? ASSISTANT: A red ball. "
    prompt = processor.apply_chat_template(conv[:1], add_generation_prompt=True)
    assert prompt == "USER: <image>\nWhat is in the picture? ASSISTANT:"


def test_forward_expands_image_tokens_and_pads_right(processor: Any, model: Any) -> None:
    inputs, texts = _batch(processor)
    tok = processor.tokenizer
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert inputs["pixel_values"].shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    image_id = model.config.image_token_index
    assert (ids == image_id).sum(dim=1).tolist() == [IMAGE_TOKENS, IMAGE_TOKENS]
    lengths = [len(tok(t.replace(IMAGE_TOKEN, IMAGE_TOKEN * IMAGE_TOKENS)).input_ids) for t in texts]
    assert lengths[0] > lengths[1] and ids.shape[1] == max(lengths)
    assert mask.sum(dim=1).tolist() == lengths
    assert (ids[1, lengths[1] :] == tok.pad_token_id).all() and mask[1, : lengths[1]].all()  # padded on the right
    assert (ids[:, 0] == tok.bos_token_id).all()
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (2, ids.shape[1], len(tok))
    assert torch.isfinite(out.logits).all()
    # the image features really enter the sequence: another image changes the logits
    other = processor(images=[_image(5), _image(6)], text=texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        assert not torch.allclose(model(**other).logits, out.logits)


def test_loss_backward_reaches_language_model_and_projector(processor: Any, model: Any) -> None:
    inputs, _ = _batch(processor)
    labels = inputs["input_ids"].clone()
    labels[inputs["attention_mask"] == 0] = -100
    labels[labels == model.config.image_token_index] = -100
    model.train()
    out = model(**inputs, labels=labels)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for part in ("language_model", "lm_head", "multi_modal_projector", "vision_tower"):
        with_grad = [g for n, g in grads.items() if part in n and g is not None]
        assert with_grad and any(g.abs().sum() > 0 for g in with_grad), part


def test_generate_a_few_tokens(processor: Any, model: Any) -> None:
    prompt = processor.apply_chat_template(_conversation("What is in the picture?"), add_generation_prompt=True)
    inputs = processor(images=[_image(0)], text=[prompt], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 3)
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    assert isinstance(processor.batch_decode(out[:, -3:], skip_special_tokens=True)[0], str)


def test_generate_a_left_padded_batch(processor: Any, model: Any) -> None:
    prompts = [
        processor.apply_chat_template(_conversation(q), add_generation_prompt=True)
        for q in ("What is in the picture?", "Describe this image in detail, please.")
    ]
    inputs = processor(
        images=[_image(0), _image(1)], text=prompts, return_tensors="pt", padding=True, padding_side="left"
    )
    assert (inputs["attention_mask"][:, -1] == 1).all()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 3)


def test_seed_decides_the_weights(folder: Path, tmp_path: Path) -> None:
    same = load_file(write_tiny_llava(tmp_path / "same", seed=0) / "model.safetensors")
    other = load_file(write_tiny_llava(tmp_path / "other", seed=1) / "model.safetensors")
    ours = load_file(folder / "model.safetensors")
    assert _same_weights(same, ours)
    assert not _same_weights(other, ours)
    assert other.keys() == ours.keys()
    assert (tmp_path / "same" / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()


def test_writer_leaves_the_callers_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    write_tiny_llava(tmp_path / "m", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_tokenizer_keeps_caption_words_whole(processor: Any) -> None:
    tok = processor.tokenizer
    for w in LLAVA_WORDS:
        assert tok.tokenize(f"{w}") == [f"▁{w}"], w
    for w in LLAVA_BARE_WORDS:
        assert tok.tokenize(f"{IMAGE_TOKEN}\n{w}")[-1] == w, w
    config = SynthConfig(n=8, width=64, height=64, min_size=0.2, max_size=0.3)
    for i in range(8):
        scene = make_scene(config, i)
        for text in (scene.question, scene.chosen, scene.rejected):
            pieces = tok.tokenize(text)
            words = [p for p in pieces if p.startswith("▁")]
            assert len(words) == len(text.split()), (text, pieces)  # one piece per word, then punctuation
            assert not any(p.startswith("<0x") for p in pieces), (text, pieces)


@pytest.mark.parametrize(
    "text",
    ["xylophone quizzically", "ZXQ 日本 🙂 naïve café", "tab\there, new\nline", "1234567890 !?#@"],
)
def test_tokenizer_never_maps_text_to_unk(processor: Any, text: str) -> None:
    tok = processor.tokenizer
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids and tok.unk_token_id not in ids
    assert tok.decode(ids) == text


def test_learn_llama_bpe_is_deterministic_and_merges_each_word() -> None:
    merges = learn_llama_bpe(["cat", "cart", "car"], ["Cat"])
    assert merges == learn_llama_bpe(["cat", "cart", "car"], ["Cat"])
    made = {a + b for a, b in merges}
    assert {"▁cat", "▁cart", "▁car", "Cat"} <= made
    assert all("▁" not in b for _, b in merges)


def test_config_builder_matches_the_folder(folder: Path, model: Any) -> None:
    loaded = model.config
    cfg = build_tiny_llava_config(loaded.text_config.vocab_size, loaded.image_token_index)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size"):
        assert getattr(cfg.vision_config, key) == getattr(loaded.vision_config, key), key
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        assert getattr(cfg.text_config, key) == getattr(loaded.text_config, key), key
    assert cfg.image_seq_length == IMAGE_TOKENS == loaded.image_seq_length


def test_peft_lora_wraps_the_model(processor: Any, model: Any) -> None:
    import peft
    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )
    trainable = {n: p for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # q_proj / v_proj exist in both the Llama layers and the CLIP tower, as in the real model
    in_lm = [n for n in trainable if ".language_model." in n]
    assert len(in_lm) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    inputs, _ = _batch(processor)
    out = lora(**inputs, labels=inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100))
    out.loss.backward()
    assert all(trainable[n].grad is not None for n in in_lm)
    assert all(p.grad is None for p in lora.parameters() if not p.requires_grad)


def test_cli_writes_the_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mfpo.cli import app

    result = CliRunner().invoke(app, ["models", "tiny-llava", "--out", str(tmp_path / "llava"), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "llava")
    assert (tmp_path / "llava" / "model.safetensors").is_file()
