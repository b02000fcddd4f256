"""End to end on CPU: tiny LLaVA -> `mfpo train` (2 LoRA steps) -> `mfpo eval report` of base vs trained:
Object HalBench (CHAIR) and POPE on fixture files, the modality probe, report.json / report.md / plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mfpo.cli import app
from mfpo.eval.benchmarks import ReportConfig
from mfpo.eval.chair import score_chair_files
from mfpo.eval.config import ModelSpec
from mfpo.eval.pope import score_pope
from mfpo.eval.report import claim_run_dir
from mfpo.eval.rows import read_rows
from mfpo.eval.table import markdown_table
from mfpo.models.tiny_llava import write_tiny_llava
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.embedded import run_generate
from mfpo.synth import SynthConfig, generate_scenes
from trainer.config import TrainConfig
from trainer.loop import train

DATA = Path(__file__).parent / "data" / "eval"
PNG = b"\x89PNG\r\n\x1a\n"


def _setup(root: Path) -> Path:
    """Images, Object HalBench prompts, a generated dataset, the tiny LLaVA and its 2-step MFPO adapter;
    returns the report config file."""
    images = root / "images"
    images.mkdir()
    for k, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]):
        Image.new("RGB", (48 + 8 * k, 64), colour).save(images / f"COCO_val2014_{101 + k:012d}.jpg")
    (root / "objhal.jsonl").write_text("".join(
        json.dumps({"image_id": 101 + k, "question": "Describe this image in detail.",
                    "image": f"COCO_val2014_{101 + k:012d}.jpg"}) + "\n" for k in range(4)))
    items = generate_scenes(SynthConfig(n=4, seed=7, width=64, height=64), root / "items")
    run_generate(items, root / "dataset", GenerateConfig.model_validate({"regions": {"mode": "annotations"}}),
                 workers=1, gallery=False)
    llava = write_tiny_llava(root / "llava")
    train(TrainConfig(max_steps=2, batch_size=2, learning_rate=5e-3), str(root / "dataset"), str(llava), root / "run")
    config = {
        "object_halbench": {"questions": "objhal.jsonl", "image_dir": "images",
                            "instances": [str(DATA / "coco_instances.json")],
                            "captions": [str(DATA / "coco_captions.json")]},
        "pope": {"splits": [str(DATA / "coco_pope_random.json"), str(DATA / "coco_pope_popular.json")],
                 "image_dir": "images"},
        "probe_dataset": "dataset",
        "probe": {"batch_size": 2},
        "generation": {"batch_size": 4, "max_new_tokens": 12},
    }
    (root / "report.json").write_text(json.dumps(config))
    return root / "report.json"


def test_train_then_report_base_vs_trained(tmp_path, monkeypatch):
    config = _setup(tmp_path)
    out = tmp_path / "out"
    args = ["eval", "report", "--config", str(config), "--model", str(tmp_path / "run" / "final"), "--compare",
            str(tmp_path / "llava"), "--out", str(out), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert list(report["runs"]) == ["base", "trained"]
    assert report["runs"]["trained"]["model"]["model"] == str(tmp_path / "run" / "final")
    for name in ("base", "trained"):
        run = out / "runs" / name
        results = report["runs"][name]["results"]
        assert set(results) == {"object_halbench", "pope", "probe"}
        # the report's numbers are the scorers' on the run's answer files
        chair = score_chair_files(run / "answers" / "object_halbench.jsonl", [DATA / "coco_instances.json"],
                                  [DATA / "coco_captions.json"])
        assert results["object_halbench"] == pytest.approx(chair.summary)
        pope = score_pope({"coco_random": (run / "answers" / "pope_coco_random.jsonl", DATA / "coco_pope_random.json"),
                           "coco_popular": (run / "answers" / "pope_coco_popular.jsonl",
                                            DATA / "coco_pope_popular.json")})
        assert results["pope"]["mean"] == pytest.approx(pope["mean"])
        assert results["probe"]["n"] == 4 and len(read_rows(run / "probe.jsonl")) == 4
        answers = read_rows(run / "answers" / "pope_coco_random.jsonl")
        assert len(answers) == 8 and {"label", "prompt", "text", "model_id"} <= set(answers[0])
        assert len(read_rows(run / "answers" / "object_halbench.jsonl")) == 4
        assert json.loads((run / "scores" / "object_halbench.json").read_text())["summary"] == pytest.approx(
            chair.summary)
    table = report["table"]
    assert list(table["base"]) == ["ObjHal CHAIR_s", "ObjHal CHAIR_i", "ObjHal Recall", "ObjHal Len", "POPE Acc",
                                   "POPE F1", "POPE Yes", "Probe y_w (m)", "Probe y_w (noise)", "Probe gap",
                                   "Probe m over m'"]
    assert table["trained"]["ObjHal CHAIR_s"] == report["runs"]["trained"]["results"]["object_halbench"]["chair_s"]
    md = (out / "report.md").read_text()
    assert markdown_table(table, ("base", "trained")) in md
    assert "| Model | ObjHal CHAIR_s ↓ | ObjHal CHAIR_i ↓ |" in md and "| Δ (trained − base) |" in md
    header = next(line for line in md.splitlines() if line.startswith("| Model |"))
    assert header.count("|") == len(table["base"]) + 2  # no stray pipe inside a column name
    assert "coco_random |" in md and "Implicit rewards of training" in md
    assert report["probe_rewards"]["n"] == 4
    assert report["plots"] == ["probe.png", "benchmarks.png"]
    assert all((out / p).read_bytes()[:8] == PNG for p in report["plots"])
    # a second run resumes: no answer is generated and no probe log-prob computed again; the numbers stay
    def no_forward(*args, **kwargs):
        raise AssertionError("the probe ran again")

    monkeypatch.setattr("mfpo.eval.probe.answer_logps", no_forward)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    second = json.loads((out / "report.json").read_text())
    assert all(g["written"] == 0 for run in second["runs"].values() for g in run["generation"].values())
    assert second["runs"]["base"]["generation"]["pope_coco_random"]["resumed"] == 8
    assert second["table"] == table


def test_a_run_folder_belongs_to_one_model(tmp_path):
    claim_run_dir(tmp_path / "run", ModelSpec(model="a"))
    claim_run_dir(tmp_path / "run", ModelSpec(model="a"))  # the same model resumes
    with pytest.raises(ValueError, match="use another --out"):
        claim_run_dir(tmp_path / "run", ModelSpec(model="a", adapter="b"))


def test_report_config_is_checked(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"pope": {"splits": ["x.json"], "image_dir": "i"}, "popee": 1}))
    result = CliRunner().invoke(app, ["eval", "report", "--config", str(tmp_path / "bad.json"), "--model", "m",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown option(s) for ReportConfig: popee" in result.output
    with pytest.raises(TypeError, match="popee"):
        ReportConfig.load(tmp_path / "bad.json")
    (tmp_path / "mm.json").write_text(json.dumps({"mmhal": {"template": "t.json", "image_dir": "i"}}))
    loaded = ReportConfig.load(tmp_path / "mm.json")
    assert loaded.mmhal is not None and loaded.mmhal.template == tmp_path / "t.json" and loaded.needs_judge
    result = CliRunner().invoke(app, ["eval", "report", "--config", str(tmp_path / "mm.json"), "--model", "m",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "need a `judge`" in result.output


def _readme_section() -> str:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    return text.split("## Evaluate", 1)[1].split("\n## ", 1)[0]


def test_readme_evaluate_section_matches_the_commands():
    section = _readme_section()
    config = section.split("```json\n", 1)[1].split("```", 1)[0]
    parsed = ReportConfig.model_validate(json.loads(config))
    assert parsed.pope is not None and parsed.needs_judge and parsed.judge is not None
    commands = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    lines = [line.split("#")[0].split() for line in commands.splitlines() if line.startswith("mfpo eval")]
    seen = set()
    for words in lines:
        path = words[2:4] if words[2] == "score" else words[2:3]
        seen.add(" ".join(path))
        help_text = CliRunner().invoke(app, ["eval", *path, "--help"], terminal_width=200).output
        for option in (w for w in words if w.startswith("--")):
            assert option in help_text, (path, option)
    assert seen == {"generate", "score chair", "score pope", "score amber", "score mmhal", "score llava-bench",
                    "probe", "report"}
