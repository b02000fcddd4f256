"""The testbed's machinery end to end on configs/testbed-mini.json (issue 16: the suite's mini version, <= 90 s).

It checks that every piece runs and is wired as the report says (world -> `mfpo generate` datasets -> SFT base
models -> each loss's preference run -> CHAIR / POPE / probe -> tables with intervals, plots, resume), not the
outcome: the mini model is far too small to learn the world.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mfpo.testbed.config import TestbedConfig as Config
from mfpo.testbed.experiment import run_testbed
from mfpo.testbed.runs import RESULT, read_rows

ROOT = Path(__file__).resolve().parents[1]


def test_committed_full_config_is_the_default_one() -> None:
    """configs/testbed.json is what `mfpo testbed` runs without --config: the fixed, written-down configuration."""
    committed = Config.model_validate_json((ROOT / "configs" / "testbed.json").read_text())
    assert committed == Config()
    assert {r.name for r in committed.runs} >= {"dpo", "mfpo", "mdpo", "adavip", "text-margin", "image-margin",
                                                 "text-only", "eta-0.2", "eta-0.4", "end-to-end", "global",
                                                 "random", "t100", "t300", "t700", "t900"}
    assert len(committed.seeds) >= 3


@pytest.mark.slow
def test_mini_testbed_end_to_end(tmp_path: Path) -> None:
    config = Config.model_validate_json((ROOT / "configs" / "testbed-mini.json").read_text())
    out = tmp_path / "tb"
    lines: list[str] = []
    report = run_testbed(config, out, log=lines.append)
    names = [r.name for r in config.runs]
    assert report["runs"] == names and report["seeds"] == [0, 1]

    # datasets through the real pipeline: exact annotation regions (MFPO's noise and the siblings' negatives in
    # one dataset), or the whole image for the global ablation
    regions = read_rows(out / "data" / "regions-t500" / "dataset.jsonl")
    assert len(regions) == config.world.preference_scenes
    assert all(r["regions"] and r["regions"][0]["source"] == "annotations" for r in regions)
    kinds = {"mfpo", "mdpo", "adavip"}
    for r in regions:
        assert set(r["negatives"]) == kinds
        assert r["rejected_image"] == r["negatives"]["mfpo"]["image"]
        assert all((out / "data" / "regions-t500" / n["image"]).is_file() for n in r["negatives"].values())
    ablation = read_rows(out / "data" / "global-t500" / "dataset.jsonl")
    assert {r["perturbation"]["mode"] for r in ablation} == {"global"} and len(ablation) == len(regions)

    # every loss really trained with its own terms, on the data the report names
    expected_keys = {"dpo": "loss/text", "mfpo": "loss/image", "mdpo": "loss/anchor",
                     "adavip": "weights/vision_rejected", "global": "loss/image"}
    for seed in (0, 1):
        for name in names:
            folder = out / "runs" / f"seed-{seed}" / name
            result = json.loads((folder / RESULT).read_text())
            steps = [r for r in read_rows(folder / "train" / "metrics.jsonl") if "loss" in r]
            assert steps and expected_keys[name] in steps[0], (name, steps[0])
            stages = {r["stage"] for r in steps}
            assert stages == ({"all"} if config.run(name).curriculum == "none" else {"easy", "medium", "hard"})
            m = result["metrics"]
            assert set(m) >= {"captions", "pope", "answers", "probe", "probe_vs_base"}
            assert m["probe"]["n"] == config.world.test_scenes
            assert len(read_rows(folder / "probe.jsonl")) == config.world.test_scenes
            assert set(m["pope"]) == {"random", "popular", "adversarial", "mean"}
        assert (out / "base" / f"seed-{seed}" / "sft" / "final" / "config.json").is_file()
    for name in ("mdpo", "adavip"):
        assert report["negatives_used"][name] == config.run(name).negatives

    # the report: one table per configured table, intervals over the two seeds, the verdict, notes, plots
    md = (out / "report.md").read_text()
    assert [t["name"] for t in report["tables"]] == ["main", "table8"]
    assert "MFPO Table 8" in md and "± " in md and "## MFPO vs DPO" in md
    assert set(report["mfpo_vs_dpo"]["CHAIR_i"]) == {"mean", "ci95", "n", "verdict"}
    for plot in report["plots"]:
        assert (out / plot).stat().st_size > 1000
    assert len(report["plots"]) == 3

    # resumable: a second invocation redoes nothing and writes the same tables
    started = time.perf_counter()
    again = run_testbed(config, out, log=lines.append)
    assert time.perf_counter() - started < 30
    assert again["tables"] == report["tables"]
    with pytest.raises(ValueError, match="another configuration"):
        run_testbed(config.model_copy(update={"seeds": (0,)}), out, log=lines.append)
