"""`mfpo eval generate`: tiny random-weight LLaVA / LLaVA-NeXT (+ LoRA) answer benchmark prompts, batched,
left-padded, resumable, through the same loading code a real checkpoint goes through."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mfpo.cli import app
from mfpo.eval.config import GenerationConfig, ModelSpec
from mfpo.eval.hf_runner import HFLlavaRunner
from mfpo.eval.model import resolve_spec
from mfpo.eval.prompts import load_prompt_image, read_prompts
from mfpo.eval.rows import RowsError, id_key_of, read_rows
from mfpo.eval.runner import GenerationRequest, existing_answer_ids, generate_answers
from mfpo.models.tiny_llava import write_tiny_llava, write_tiny_llava_next

DATA = Path(__file__).parent / "data" / "eval"
POPE = DATA / "coco_pope_random.json"
FAST = GenerationConfig(batch_size=3, max_new_tokens=6)


def write_images(folder: Path) -> Path:
    """The COCO file names the fixture prompts use, as small JPEGs of different sizes and colours."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, (size, colour) in enumerate([((64, 48), (200, 30, 30)), ((40, 80), (30, 200, 30)),
                                        ((90, 90), (30, 30, 200)), ((56, 70), (220, 220, 40))]):
        Image.new("RGB", size, colour).save(folder / f"COCO_val2014_{101 + k:012d}.jpg")
    return folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-generate")
    return {"llava": write_tiny_llava(root / "llava"), "images": write_images(root / "images"), "root": root}


@pytest.fixture(scope="module")
def runner(assets) -> HFLlavaRunner:
    return HFLlavaRunner.load(ModelSpec(model=str(assets["llava"]), device="cpu"))


def _texts(path: Path) -> dict[str, str]:
    return {str(r["question_id"]): r["text"] for r in read_rows(path)}


def test_batched_left_padded_answers_equal_one_prompt_at_a_time(assets, runner, tmp_path):
    prompts = read_prompts(POPE)
    batched = generate_answers(prompts, runner, tmp_path / "b.jsonl", assets["images"], FAST, "question_id")
    single = generate_answers(prompts, runner, tmp_path / "s.jsonl", assets["images"],
                              FAST.model_copy(update={"batch_size": 1}), "question_id")
    assert batched.written == single.written == 8 and not batched.failed
    assert _texts(tmp_path / "b.jsonl") == _texts(tmp_path / "s.jsonl")
    rows = read_rows(tmp_path / "b.jsonl")
    assert [r["question_id"] for r in rows] == list(range(1, 9))  # ids keep their type and order
    first = rows[0]
    assert first["prompt"] == "Is there a dog in the image?" and first["label"] == "yes"
    assert first["image"] == "COCO_val2014_000000000101.jpg" and first["model_id"] == "llava"
    assert isinstance(first["text"], str) and len({r["text"] for r in rows}) > 1  # images differ -> answers differ


def test_generation_resumes_and_repairs_a_cut_last_line(assets, runner, tmp_path):
    out = tmp_path / "answers.jsonl"
    prompts = read_prompts(POPE)
    part = generate_answers(prompts, runner, out, assets["images"], FAST.model_copy(update={"limit": 3}),
                            "question_id")
    assert (part.written, part.resumed) == (3, 0)
    with open(out, "a") as fh:
        fh.write('{"question_id": 4, "te')  # a run killed in the middle of a line
    assert existing_answer_ids(out) == {"1", "2", "3"} and out.read_text().endswith("\n")
    rest = generate_answers(prompts, runner, out, assets["images"], FAST, "question_id")
    assert (rest.written, rest.resumed) == (5, 3)
    full = tmp_path / "full.jsonl"
    generate_answers(prompts, runner, full, assets["images"], FAST, "question_id")
    assert _texts(out) == _texts(full) and len(read_rows(out)) == 8
    other = CountingRunner()  # another model must not resume (and mix into) this file
    with pytest.raises(RowsError, match="holds answers of model 'llava', not 'counting'"):
        generate_answers(prompts, other, out, assets["images"], FAST, "question_id")
    assert other.seen == []


class CountingRunner:
    """Any backend implementing the AnswerRunner protocol plugs into the loop (a vLLM one later)."""

    name = "counting"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> list[str]:
        self.seen += [r.id for r in requests]
        return [f"{r.question} {r.image.size[0]}x{r.image.size[1]}" for r in requests]


def test_runner_interface_missing_images_and_prompt_suffix(assets, tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("COCO_val2014_000000000101.jpg", "COCO_val2014_000000000103.jpg"):
        (tmp_path / "images" / name).write_bytes((assets["images"] / name).read_bytes())
    backend = CountingRunner()
    summary = generate_answers(read_prompts(POPE), backend, tmp_path / "a.jsonl", tmp_path / "images",
                               GenerationConfig(batch_size=4, prompt_suffix=" Answer yes or no."), "question_id")
    assert backend.seen == ["1", "2", "5", "6"] and summary.written == 4
    assert sorted(summary.failed) == ["3", "4", "7", "8"] and "not found" in summary.failed["3"]
    assert read_rows(tmp_path / "a.jsonl")[0]["text"] == "Is there a dog in the image? Answer yes or no. 64x48"


def test_lora_adapter_is_applied(assets, runner, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = AutoModelForImageTextToText.from_pretrained(assets["llava"])
    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=r".*language_model.*\.(q_proj|v_proj)",
                      init_lora_weights=False)
    adapter = tmp_path / "run" / "final"
    get_peft_model(base, lora).save_pretrained(adapter)
    AutoProcessor.from_pretrained(assets["llava"]).save_pretrained(adapter)  # as `mfpo train` writes final/
    spec = ModelSpec(model=str(adapter), device="cpu")
    assert resolve_spec(spec) == (str(assets["llava"]), str(adapter)) and spec.label == "run"
    tuned = HFLlavaRunner.load(spec)
    prompts = read_prompts(POPE)
    generate_answers(prompts, tuned, tmp_path / "tuned.jsonl", assets["images"], FAST, "question_id")
    generate_answers(prompts, runner, tmp_path / "base.jsonl", assets["images"], FAST, "question_id")
    assert _texts(tmp_path / "tuned.jsonl") != _texts(tmp_path / "base.jsonl")
    merged = HFLlavaRunner(tuned.model.merge_and_unload(), tuned.processor, tuned.device, "merged")
    generate_answers(prompts, merged, tmp_path / "merged.jsonl", assets["images"], FAST, "question_id")
    assert _texts(tmp_path / "merged.jsonl") == _texts(tmp_path / "tuned.jsonl")


def test_llava_next_batches_any_resolution_images(assets, tmp_path):
    next_runner = HFLlavaRunner.load(ModelSpec(model=str(write_tiny_llava_next(tmp_path / "next")), device="cpu"))
    prompts = read_prompts(POPE)[:4]
    generate_answers(prompts, next_runner, tmp_path / "b.jsonl", assets["images"], FAST, "question_id")
    generate_answers(prompts, next_runner, tmp_path / "s.jsonl", assets["images"],
                     FAST.model_copy(update={"batch_size": 1}), "question_id")
    assert _texts(tmp_path / "b.jsonl") == _texts(tmp_path / "s.jsonl") and len(_texts(tmp_path / "b.jsonl")) == 4


def test_prompt_files_of_other_benchmarks(assets, tmp_path):
    # Object HalBench (RLAIF-V): image_id + question + the image inline as bare base64
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (1, 2, 3)).save(buf, format="JPEG")
    objhal = tmp_path / "objhal.jsonl"
    objhal.write_text(json.dumps({"image_id": 101, "question": "Describe this image.",
                                  "image": base64.b64encode(buf.getvalue()).decode()}) + "\n")
    rows = read_rows(objhal)
    (p,) = read_prompts(objhal)
    assert id_key_of(rows) == "image_id" and p.id == "101" and p.question == "Describe this image."
    assert load_prompt_image(p, tmp_path).size == (30, 20)
    # MMHal-Bench: a JSON array without question ids (row positions) and image URLs looked up by file name
    (tmp_path / "mmhal_a1.png").write_bytes(b"")
    Image.new("RGB", (12, 12)).save(tmp_path / "mmhal_a1.png")
    template = read_prompts(DATA / "mmhal_template.json")
    assert [t.id for t in template] == ["a1", "a2", "a3"] and template[0].question == "What color is the cat?"
    assert load_prompt_image(template[0], tmp_path).size == (12, 12)
    # AMBER: id + query
    amber = tmp_path / "query.json"
    amber.write_text(json.dumps([{"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image."}]))
    assert [(q.id, q.question, q.image) for q in read_prompts(amber)] == [("1", "Describe this image.",
                                                                           "AMBER_1.jpg")]


def test_generate_command(assets, tmp_path):
    out = tmp_path / "answers.jsonl"
    result = CliRunner().invoke(app, ["eval", "generate", str(POPE), "--model", str(assets["llava"]), "--out",
                                      str(out), "--image-dir", str(assets["images"]), "--max-new-tokens", "4",
                                      "--limit", "5", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["written"] == 5 and len(read_rows(out)) == 5
    bad = CliRunner().invoke(app, ["eval", "generate", str(POPE), "--model", str(tmp_path / "nope"), "--out",
                                   str(out), "--device", "cpu"])
    assert bad.exit_code == 2 and "cannot load model" in bad.output
