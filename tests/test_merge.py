"""`mfpo merge` / `mfpo train --merge` (trainer/merge.py): the trained tiny LLaVA as a plain transformers folder
that generates exactly what base + adapter generate, in the layout transformers, vLLM and lmms-eval load."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from mfpo.models.tiny_llava import write_tiny_llava
from trainer.merge import MANIFEST, RUN_SUMMARY, MergeConfig, MergeError, merge_model, processor_files

QUESTION = "Describe this image in detail."
NEW_TOKENS = 12
# The weight names of llava-hf/llava-1.5-7b-hf: vLLM's LLaVA (language_model = LlamaForCausalLM, vision_tower =
# CLIPVisionModel, multi_modal_projector) loads them as they are, as do transformers 4.x and 5.x.
HUB_PREFIXES = ("language_model.model.", "language_model.lm_head.", "vision_tower.vision_model.",
                "multi_modal_projector.")
# lmms-eval 0.7.3, lmms_eval/models/simple/llava_hf.py: the prompt template when the tokenizer has none.
LMMS_EVAL_VICUNA = (
    "{% for message in messages %}{% if loop.index0 == 0 %}A chat between a curious user and an artificial "
    "intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. "
    "USER: {{ message['content'] }} {% elif message['role'] == 'user' %}USER: {{ message['content'] }} {% else %} "
    "ASSISTANT: {{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _hub_layout(folder: Path) -> Path:
    """The tiny LLaVA in llava-hf's hub layout: the chat template in the processor-only chat_template.json, the
    vision tower's weights under ``vision_tower.vision_model.`` (a tower built in-process saves without it)."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    renamed = {("vision_tower.vision_model." + k.removeprefix("vision_tower.")
                if k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.") else k): v
               for k, v in weights.items()}
    save_file(renamed, str(folder / "model.safetensors"), metadata={"format": "pt"})
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    return folder


def _random_adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter as `mfpo train` leaves it in final/ (adapter + processor), with non-zero B so it matters."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    torch.manual_seed(0)
    model = LlavaForConditionalGeneration.from_pretrained(str(base))
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                      target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)")
    get_peft_model(model, lora).save_pretrained(str(out))
    AutoProcessor.from_pretrained(str(base)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("merge")
    base = _hub_layout(write_tiny_llava(root / "base"))
    adapter = _random_adapter(base, root / "run" / "final")
    merged = Path(merge_model(str(adapter), str(root / "merged")))
    image = Image.new("RGB", (64, 64), (200, 40, 40))
    image.paste((30, 90, 220), (10, 30, 50, 60))
    return {"root": root, "base": base, "adapter": adapter, "merged": merged, "image": image}


def _inputs(folder: Path, image: Image.Image) -> Any:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(folder))
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    return processor(images=[image], text=[text], return_tensors="pt")


@torch.no_grad()
def _greedy(model: Any, inputs: Any) -> list[int]:
    out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def _base_plus_adapter(assets: dict[str, Any]) -> Any:
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration

    base = LlavaForConditionalGeneration.from_pretrained(str(assets["base"]))
    return PeftModel.from_pretrained(base, str(assets["adapter"])).eval()


def test_merged_model_generates_the_same_tokens_as_base_plus_adapter(assets):
    from transformers import LlavaForConditionalGeneration

    inputs = _inputs(assets["base"], assets["image"])
    adapted = _base_plus_adapter(assets)
    merged = LlavaForConditionalGeneration.from_pretrained(str(assets["merged"])).eval()
    base = LlavaForConditionalGeneration.from_pretrained(str(assets["base"])).eval()
    want = _greedy(adapted, inputs)
    assert _greedy(merged, inputs) == want
    assert _greedy(base, inputs) != want  # the adapter changes the answer: the merge is what carries it
    with torch.no_grad():
        assert torch.allclose(merged(**inputs).logits, adapted(**inputs).logits, atol=1e-5)


def test_the_folder_is_the_bases_layout_with_plain_weights(assets):
    base, merged = assets["base"], assets["merged"]
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"] and config["model_type"] == "llava"
    before = json.loads((base / "config.json").read_text())
    for key in ("text_config", "vision_config"):  # the same network (save_pretrained may add its dtype)
        assert {k: v for k, v in config[key].items() if k != "dtype"} == before[key]
    with safe_open(str(merged / "model.safetensors"), "pt") as m, safe_open(str(base / "model.safetensors"), "pt") as b:
        names = set(m.keys())
        assert names == set(b.keys())  # no base_layer / lora_A: nothing a plain loader would not know
        assert all(n.startswith(HUB_PREFIXES) for n in names)
        changed = [n for n in names if not torch.equal(m.get_tensor(n), b.get_tensor(n))]
    assert changed and all(".self_attn." in n for n in changed)  # exactly the LoRA targets moved
    assert [p.name for p in processor_files(merged)] == [p.name for p in processor_files(base)]
    assert all((merged / p.name).read_bytes() == p.read_bytes() for p in processor_files(base))
    assert not list(merged.glob("adapter_*")) and json.loads((merged / MANIFEST).read_text())["dtype"] == "float32"


def test_lmms_eval_llava_hf_loads_it_and_generates_what_base_plus_adapter_does(assets):
    """The steps of lmms-eval 0.7.3's `llava_hf` (simple): AutoConfig's model_type picks the class, the
    processor comes from the same folder, left padding, the tokenizer's template (none in llava-hf's layout,
    so its Vicuna one) over string content, greedy generation stopped at EOS."""
    from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    model_map = {"llava": LlavaForConditionalGeneration, "llava_next": LlavaNextForConditionalGeneration}
    pretrained = str(assets["merged"])
    model_cls = model_map[getattr(AutoConfig.from_pretrained(pretrained), "model_type", "llava")]
    model = model_cls.from_pretrained(pretrained, revision="main", torch_dtype="auto", device_map="cpu",
                                      trust_remote_code=False, attn_implementation=None).eval()
    processor = AutoProcessor.from_pretrained(pretrained, revision="main", trust_remote_code=False)
    processor.tokenizer.padding_side = "left"
    tokenizer = processor.tokenizer
    assert tokenizer.chat_template is None  # as in the base: the processor-only template stays the processor's
    tokenizer.chat_template = LMMS_EVAL_VICUNA
    text = tokenizer.apply_chat_template([{"role": "user", "content": f"<image>\n{QUESTION}"}], tokenize=False,
                                         add_generation_prompt=True)
    inputs = processor(images=[assets["image"]], text=text, return_tensors="pt").to("cpu", model.dtype)
    eos = tokenizer.eos_token_id
    kwargs = {"max_new_tokens": NEW_TOKENS, "do_sample": False, "pad_token_id": eos, "eos_token_id": eos,
              "use_cache": True}
    with torch.no_grad():
        got = model.generate(**inputs, **kwargs)[0, inputs["input_ids"].shape[1]:].tolist()
        want = _base_plus_adapter(assets).generate(**inputs, **kwargs)[0, inputs["input_ids"].shape[1]:].tolist()
    assert got == want and len(got) > 0
    # lmms-eval's llava_hf_chat: the processor's own template over structured messages
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    assert processor.apply_chat_template(chat, add_generation_prompt=True).endswith(f"{QUESTION} ASSISTANT:")


def test_a_full_finetuning_run_is_rewritten_with_the_requested_dtype(assets):
    out = Path(merge_model(str(assets["base"]), str(assets["root"] / "full-bf16"),
                           config=MergeConfig(dtype="bfloat16")))
    config = json.loads((out / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    with safe_open(str(out / "model.safetensors"), "pt") as m:
        names = m.keys()
        assert {m.get_tensor(n).dtype for n in names} == {torch.bfloat16}


def test_bad_inputs_and_an_unfinished_run_fail_with_a_reason(assets, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MergeError, match=r"neither adapter_config\.json"):
        merge_model(str(tmp_path / "empty"), str(tmp_path / "o"))
    with pytest.raises(MergeError, match=r"no summary\.json after"):
        merge_model(str(assets["adapter"]), str(tmp_path / "o"), config=MergeConfig(wait_s=0.3, poll_s=0.1))
    assert not (tmp_path / "o").exists()


def test_merge_waits_for_the_run_then_reads_and_writes_the_object_store(assets, monkeypatch):
    from support.s3_server import running_s3_server

    from mfpo.storage.s3 import S3Store
    from trainer.merge import publish_folder

    with running_s3_server() as s3:
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        publish_folder(assets["adapter"], "s3://runs/exp/final")
        runs = S3Store(s3.config("runs", prefix="exp"))
        threading.Timer(1.0, lambda: runs.put(RUN_SUMMARY, b"{}")).start()  # the run finishes a second later
        started = time.monotonic()
        merge_model("s3://runs/exp/final", "s3://runs/exp/merged", base=str(assets["base"]),
                    config=MergeConfig(wait_s=60, poll_s=0.2))
        assert time.monotonic() - started >= 1.0
        merged = S3Store(s3.config("runs", prefix="exp/merged"))
        assert sorted(merged.list("")) == sorted(p.name for p in assets["merged"].iterdir())
        assert merged.get("model.safetensors") == (assets["merged"] / "model.safetensors").read_bytes()


def test_mfpo_train_merge_writes_merged_then_the_summary(tmp_path):
    """`mfpo train --merge` end to end on a generated dataset; `mfpo merge` gives the same weights."""
    from mfpo.pipeline.config import GenerateConfig
    from mfpo.pipeline.embedded import run_generate
    from mfpo.synth import SynthConfig, generate_scenes

    items = generate_scenes(SynthConfig(n=4, seed=1, width=64, height=64), tmp_path / "items")
    run_generate(items, tmp_path / "dataset", GenerateConfig.model_validate({"regions": {"mode": "annotations"}}),
                 workers=1, gallery=False)
    base = write_tiny_llava(tmp_path / "llava")
    mfpo = str(Path(sys.executable).parent / "mfpo")
    run = subprocess.run([mfpo, "train", "--dataset", str(tmp_path / "dataset"), "--model", str(base), "--output",
                          str(tmp_path / "run"), "--max-steps", "2", "--merge"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / RUN_SUMMARY).read_text())
    assert summary["steps"] == 2 and summary["merged"] == f"{tmp_path / 'run'}/merged"
    again = subprocess.run([mfpo, "merge", "--adapter", str(tmp_path / "run" / "final"), "--out",
                            str(tmp_path / "again")], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    first = (tmp_path / "run" / "merged" / "model.safetensors").read_bytes()
    assert first == (tmp_path / "again" / "model.safetensors").read_bytes()
    assert first != (base / "model.safetensors").read_bytes()
    bad = subprocess.run([mfpo, "merge", "--adapter", str(tmp_path / "run" / "final"), "--out", str(tmp_path / "x"),
                          "--dtype", "int8"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "dtype" in bad.stderr
