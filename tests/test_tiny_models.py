"""Tiny random-weight models: written offline, loaded through the standard APIs, forward passes work."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import segment_anything  # noqa: F401  (the SAM architectures)
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file

from mfpo.models.tiny import (
    TINY_SAM_TYPE,
    WORDS,
    build_tiny_sam,
    learn_bpe,
    write_tiny_grounding_dino,
    write_tiny_models,
    write_tiny_owlv2,
    write_tiny_sam,
)

H, W = 200, 300


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _load(path: Path) -> tuple[object, torch.nn.Module]:
    processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModelForZeroShotObjectDetection.from_pretrained(path, local_files_only=True)
    return processor, model.eval()


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_layout_and_size(tiny: dict[str, Path]) -> None:
    root = tiny["sam"].parent
    assert tiny == {
        "grounding_dino": root / "grounding-dino",
        "owlv2": root / "owlv2",
        "sam": root / "sam_vit_tiny.pth",
    }
    for name in ("grounding_dino", "owlv2"):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in tiny[name].iterdir()}
    assert {"vocab.json", "merges.txt"} <= {p.name for p in tiny["owlv2"].iterdir()}
    assert (tiny["grounding_dino"] / "vocab.txt").is_file()
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 5_000_000


# -- SAM --------------------------------------------------------------------------------------


def test_sam_checkpoint_loads_strictly_and_segments_boxes(tiny: dict[str, Path], image: np.ndarray) -> None:
    from segment_anything import SamPredictor

    state = torch.load(tiny["sam"], map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and state["image_encoder.patch_embed.proj.weight"].shape == (32, 3, 16, 16)
    model = build_tiny_sam()
    model.load_state_dict(state, strict=True)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    assert predictor.features.shape == (1, 32, 64, 64)
    fractions = []
    for box in ([10, 10, 100, 100], [50, 20, 280, 190], [140, 90, 170, 120]):
        masks, scores, low_res = predictor.predict(box=np.array(box), multimask_output=True)
        assert masks.shape == (3, H, W) and masks.dtype == bool
        assert scores.shape == (3,) and low_res.shape == (3, 256, 256)
        fractions += [float(m.mean()) for m in masks]
    assert any(0.0 < f < 1.0 for f in fractions)
    assert not all(f in (0.0, 1.0) for f in fractions)


def test_sam_loads_through_the_segmentation_stage(tiny: dict[str, Path]) -> None:
    from mfpo.segmentation.sam import load_sam

    model = load_sam(TINY_SAM_TYPE, tiny["sam"])
    assert model.image_encoder.img_size == 1024 and model.mask_decoder.num_multimask_outputs == 3


def test_sam_seed_decides_the_weights(tiny: dict[str, Path], tmp_path: Path) -> None:
    again = torch.load(write_tiny_sam(tmp_path / "a.pth", seed=0), weights_only=True)
    other = torch.load(write_tiny_sam(tmp_path / "b.pth", seed=1), weights_only=True)
    reference = torch.load(tiny["sam"], weights_only=True)
    assert _same_weights(reference, again)
    assert not _same_weights(reference, other)


def test_writers_leave_the_callers_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    write_tiny_sam(tmp_path / "s.pth", seed=5)
    assert torch.equal(torch.rand(3), expected)


# -- GroundingDINO ----------------------------------------------------------------------------


def test_grounding_dino_loads_and_detects(tiny: dict[str, Path], image: np.ndarray) -> None:
    processor, model = _load(tiny["grounding_dino"])
    assert type(model).__name__ == "GroundingDinoForObjectDetection"
    assert type(processor).__name__ == "GroundingDinoProcessor"
    tokenizer = processor.tokenizer  # type: ignore[attr-defined]
    inputs = processor(images=Image.fromarray(image), text="red cup. blue ball.", return_tensors="pt")  # type: ignore[operator]
    ids = inputs["input_ids"][0].tolist()
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "red", "cup", ".", "blue", "ball", ".", "[SEP]"]
    assert ids[0] == 101 and ids[-1] == 102 and ids[3] == ids[6] == 1012  # the ids GroundingDINO hard-codes
    assert max(inputs["pixel_values"].shape[-2:]) <= 128
    with torch.inference_mode():
        outputs = model(**inputs)
    assert outputs.logits.shape == (1, 30, 256)
    assert outputs.pred_boxes.shape == (1, 30, 4)
    assert torch.isfinite(outputs.pred_boxes).all()
    results = processor.post_process_grounded_object_detection(  # type: ignore[attr-defined]
        outputs, inputs["input_ids"], threshold=0.05, text_threshold=0.05, target_sizes=[(H, W)]
    )
    assert len(results) == 1 and len(results[0]["scores"]) >= 1
    assert results[0]["boxes"].shape == (len(results[0]["scores"]), 4)
    scores = outputs.logits[0, :, : len(ids)].sigmoid()
    assert float(scores.min()) > 0.0 and float(scores.max()) < 1.0  # not saturated


def test_grounding_dino_tokenizer_covers_the_words(tiny: dict[str, Path]) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny["grounding_dino"], local_files_only=True)
    for word in WORDS:
        assert tokenizer.tokenize(word) == [word]
    assert tokenizer.unk_token not in tokenizer.tokenize("a zebroid-like quokka, 42!")


@pytest.mark.parametrize(
    ("name", "write"), [("grounding_dino", write_tiny_grounding_dino), ("owlv2", write_tiny_owlv2)]
)
def test_transformers_models_seed_decides_the_weights(tiny: dict[str, Path], tmp_path: Path, name: str,
                                                      write: Callable[..., Path]) -> None:
    reference = load_file(tiny[name] / "model.safetensors")
    again = load_file(write(tmp_path / "a", seed=0) / "model.safetensors")
    other = load_file(write(tmp_path / "b", seed=1) / "model.safetensors")
    assert _same_weights(reference, again)
    assert not _same_weights(reference, other)


# -- OWLv2 ------------------------------------------------------------------------------------


def test_owlv2_loads_and_detects(tiny: dict[str, Path], image: np.ndarray) -> None:
    processor, model = _load(tiny["owlv2"])
    assert type(model).__name__ == "Owlv2ForObjectDetection"
    assert type(processor).__name__ == "Owlv2Processor"
    inputs = processor(  # type: ignore[operator]
        text=[["red cup", "blue ball", "tree"]], images=Image.fromarray(image), return_tensors="pt"
    )
    assert inputs["input_ids"].shape == (3, 16)
    assert inputs["pixel_values"].shape == (1, 3, 128, 128)
    with torch.inference_mode():
        outputs = model(**inputs)
    assert outputs.logits.shape == (1, 64, 3)
    assert outputs.pred_boxes.shape == (1, 64, 4)
    probs = outputs.logits.sigmoid()
    assert float(probs.min()) > 0.0 and float(probs.max()) < 1.0  # not saturated
    results = processor.post_process_grounded_object_detection(  # type: ignore[attr-defined]
        outputs, threshold=0.05, target_sizes=[(H, W)]
    )
    assert len(results) == 1 and len(results[0]["scores"]) >= 1
    boxes = results[0]["boxes"]
    assert float((boxes[:, 2] - boxes[:, 0]).min()) > 0  # not collapsed to the image border


def test_owlv2_tokenizer_keeps_words_whole(tiny: dict[str, Path]) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny["owlv2"], local_files_only=True)
    ids = tokenizer("a photo of a red cup")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "red</w>", "cup</w>", "<|endoftext|>"]
    assert ids[-1] == max(tokenizer.get_vocab().values())  # OWLv2 pools the text at the argmax id
    for word in WORDS:
        assert tokenizer.tokenize(word) == [word + "</w>"]
    assert tokenizer.unk_token_id not in tokenizer("zebroid quokka 42!")["input_ids"][1:-1]




def test_learn_bpe_is_deterministic_and_merges_each_word() -> None:
    words = ["tree", "red", "green", "reed", "ee", "a"]
    merges = learn_bpe(words)
    assert merges == learn_bpe(words)
    assert len(merges) == len(set(merges))
    assert ("e", "e") in merges or ("e", "e</w>") in merges
