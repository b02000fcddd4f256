"""The modality probe on a generated dataset and a tiny LLaVA: log-probs checked against an independent
computation, margins, full-noise images, summaries, the base-vs-trained rewards and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mfpo.cli import app
from mfpo.eval.config import ModelSpec, ProbeConfig
from mfpo.eval.hf_runner import chat_prompt
from mfpo.eval.model import load_llava
from mfpo.eval.probe import (
    compare_probes,
    load_probe_items,
    noise_image,
    probe_images,
    run_probe,
    summarize_probe,
)
from mfpo.models.tiny_llava import write_tiny_llava
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.embedded import run_generate
from mfpo.synth import SynthConfig, generate_scenes

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe")
    items = generate_scenes(SynthConfig(n=5, seed=3, width=64, height=64), root / "items")
    run_generate(items, root / "dataset", GenerateConfig.model_validate({"regions": {"mode": "annotations"}}),
                 workers=1, gallery=False)
    return {"dataset": root / "dataset", "llava": write_tiny_llava(root / "llava"), "root": root}


@pytest.fixture(scope="module")
def model(assets):
    return load_llava(ModelSpec(model=str(assets["llava"]), device="cpu"))


def _logp(model, processor, question: str, answer: str, image: Image.Image) -> float:
    """log p(answer | question, image), summed over the answer tokens and EOS, computed directly."""
    prompt = chat_prompt(processor, question)
    full = processor(images=[image], text=[f"{prompt} {answer}{processor.tokenizer.eos_token}"], return_tensors="pt")
    start = processor(images=[image], text=[prompt], return_tensors="pt")["input_ids"].shape[1]
    with torch.inference_mode():
        logits = model(**full).logits[0].float()
    ids = full["input_ids"][0]
    logp = torch.log_softmax(logits[:-1], dim=-1).gather(-1, ids[1:, None])[:, 0]
    return float(logp[start - 1 :].sum())


def test_probe_rows_match_an_independent_log_prob_computation(assets, model):
    net, processor, device = model
    config = ProbeConfig(batch_size=2)
    items = load_probe_items(assets["dataset"], config)
    rows = run_probe(net, processor, device, items, config)
    assert [r["id"] for r in rows] == [i.id for i in items] and len(rows) == 5
    for item, row in zip(items[:2], rows[:2], strict=True):
        image, rejected, noise = probe_images(item, config)
        assert row["logp_chosen"] == pytest.approx(_logp(net, processor, item.question, item.chosen, image),
                                                   abs=1e-3)
        assert row["logp_chosen_rejected_image"] == pytest.approx(
            _logp(net, processor, item.question, item.chosen, rejected), abs=1e-3)
        assert row["logp_rejected_noise"] == pytest.approx(
            _logp(net, processor, item.question, item.rejected, noise), abs=1e-3)
    for r in rows:
        assert r["text_margin"] == pytest.approx(r["logp_chosen"] - r["logp_rejected"])
        assert r["image_margin"] == pytest.approx(r["logp_chosen"] - r["logp_chosen_rejected_image"])
        assert r["noise_margin"] == pytest.approx(r["logp_chosen_noise"] - r["logp_rejected_noise"])
        assert r["prefers_chosen"] == (r["text_margin"] > 0)
        assert r["prefers_chosen_noise"] == (r["noise_margin"] > 0)
    assert len({round(r["image_margin"], 6) for r in rows}) == 5  # the images matter to the random model
    # the batch size changes nothing
    single = run_probe(net, processor, device, items, ProbeConfig(batch_size=1))
    assert [r["logp_chosen_noise"] for r in single] == pytest.approx([r["logp_chosen_noise"] for r in rows],
                                                                     abs=1e-3)


def test_full_noise_image_destroys_the_content(assets):
    items = load_probe_items(assets["dataset"], ProbeConfig(limit=2))
    assert len(items) == 2
    original, _, noise = probe_images(items[0], ProbeConfig())
    image = np.asarray(original, dtype=np.float64)
    noisy = np.asarray(noise, dtype=np.float64)
    assert noise.size == original.size
    assert abs(np.corrcoef(image.ravel(), noisy.ravel())[0, 1]) < 0.1  # t=999: nothing of the image is left
    again = noise_image(original, items[0].id, ProbeConfig())
    assert np.array_equal(np.asarray(again), np.asarray(noise))  # seeded by item id
    other = np.asarray(noise_image(original, items[1].id, ProbeConfig()))
    assert not np.array_equal(other, np.asarray(noise))
    mild = np.asarray(noise_image(original, items[0].id, ProbeConfig(noise_step=50)), dtype=np.float64)
    assert np.corrcoef(image.ravel(), mild.ravel())[0, 1] > 0.5


def test_summary_and_rewards():
    def row(i: int, text: float, image: float, noise: float) -> dict:
        return {"id": str(i), "text_margin": text, "image_margin": image, "noise_margin": noise,
                "prefers_chosen": text > 0, "prefers_original_image": image > 0, "prefers_chosen_noise": noise > 0}

    base = [row(1, 1.0, -0.5, 0.8), row(2, -2.0, 0.5, -1.0), row(3, 3.0, 0.1, 2.0), row(4, 0.5, -0.1, 0.4)]
    s = summarize_probe(base)
    assert (s["n"], s["prefers_chosen"], s["prefers_chosen_noise"], s["noise_gap"]) == (4, 75.0, 75.0, 0.0)
    assert s["prefers_original_image"] == 50.0
    assert s["text_margin"]["mean"] == pytest.approx(0.625) and s["text_margin"]["median"] == pytest.approx(0.75)
    trained = [row(1, 2.0, 0.5, -0.2), row(2, -1.0, 1.5, -1.0), row(3, 3.0, 0.0, -2.0), row(5, 9.0, 9.0, 9.0)]
    r = compare_probes(base, trained)
    # shared items 1-3: text reward margins +1, +1, 0; image reward margins +1, +1, -0.1
    assert r["n"] == 3
    assert r["text_reward_margin"]["mean"] == pytest.approx(2 / 3) and r["text_reward_up"] == pytest.approx(200 / 3)
    assert r["image_reward_margin"]["mean"] == pytest.approx(1.9 / 3)
    assert summarize_probe(trained[:3])["noise_gap"] == pytest.approx(200 / 3 - 0.0)


def test_probe_command_compares_two_models(assets, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    net = get_peft_model(AutoModelForImageTextToText.from_pretrained(assets["llava"]),
                         LoraConfig(r=4, lora_alpha=64, target_modules=r".*language_model.*\.(q_proj|v_proj)",
                                    init_lora_weights=False))
    net.save_pretrained(tmp_path / "adapter")
    out = tmp_path / "probe"
    result = CliRunner().invoke(app, ["eval", "probe", str(assets["dataset"]), "--model", str(tmp_path / "adapter"),
                                      "--compare", str(assets["llava"]), "--out", str(out), "--limit", "3",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"base", "trained", "rewards"} and summary["base"]["n"] == 3
    assert summary["rewards"]["n"] == 3 and summary["rewards"]["text_reward_margin"]["std"] > 0
    assert (out / "probe.png").read_bytes()[:8] == PNG
    assert len((out / "probe_base.jsonl").read_text().splitlines()) == 3
