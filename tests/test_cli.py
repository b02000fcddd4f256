"""The `mfpo` command line as a new user meets it: --config and flags, options, exit codes, SIGTERM, umask."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mfpo.cli import app, generate_options
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.embedded import RunSummary
from mfpo.synth import SynthConfig, generate_scenes

runner = CliRunner()


def mfpo_executable() -> str:
    return str(Path(sys.executable).parent / "mfpo")


# --- --config and the flags ------------------------------------------------------------------


@pytest.fixture
def captured_config(monkeypatch) -> dict[str, Any]:
    """Run `mfpo generate` up to the pipeline: the GenerateConfig it would run with lands in the dict."""
    seen: dict[str, Any] = {}

    def fake_run_generate(input_path, out, config, **kwargs):
        seen["config"] = config
        return RunSummary(done=1, records=1, out_dir=str(out))

    monkeypatch.setattr("mfpo.pipeline.embedded.run_generate", fake_run_generate)
    return seen


def test_config_file_is_not_overridden_by_the_flags_defaults(tmp_path, captured_config):
    items = tmp_path / "items.jsonl"
    items.write_text("{}\n")
    file_options = {"keywords": {"top_k": 1, "gamma": 0.3}, "regions": {"mode": "global"},
                    "perturbation": {"noise_step": 300, "schedule": "squaredcos_cap_v2"}, "seed": 7}
    opts = tmp_path / "opts.json"
    opts.write_text(json.dumps(file_options))
    base = ["generate", str(items), "--out", str(tmp_path / "out"), "--config", str(opts), "--no-gallery"]

    result = runner.invoke(app, base)
    assert result.exit_code == 0, result.output
    config: GenerateConfig = captured_config["config"]
    assert (config.keywords.top_k, config.keywords.gamma, config.regions.mode) == (1, 0.3, "global")
    assert (config.perturbation.noise_step, config.perturbation.schedule, config.seed) == (300, "squaredcos_cap_v2", 7)

    result = runner.invoke(app, [*base, "--top-k", "2", "--noise-step", "400", "--seed", "0", "--regions", "random",
                                 "--schedule", "linear"])
    assert result.exit_code == 0, result.output
    config = captured_config["config"]  # the flags given win, even where they equal the built-in defaults
    assert (config.keywords.top_k, config.keywords.gamma, config.regions.mode) == (2, 0.3, "random")
    assert (config.perturbation.noise_step, config.perturbation.schedule, config.seed) == (400, "linear", 0)

    result = runner.invoke(app, [*base[:4], "--no-gallery"])  # no file, no flags: the config's own defaults
    assert result.exit_code == 0, result.output
    assert captured_config["config"] == GenerateConfig()


def test_generate_options_merge_models_and_device():
    file_options = {"regions": {"grounding": {"model_path": "/m/dino", "device": "cuda:1"},
                                "sam": {"checkpoint": "/m/sam.pth", "sam_type": "vit_b", "device": "cuda:1"}}}
    assert generate_options(file_options) == file_options
    merged = generate_options(file_options, sam_type="vit_l", device="cpu", grounding_model=Path("/other"))
    assert merged["regions"]["grounding"] == {"model_path": "/other", "device": "cpu"}
    assert merged["regions"]["sam"] == {"checkpoint": "/m/sam.pth", "sam_type": "vit_l", "device": "cpu"}
    assert file_options["regions"]["sam"]["sam_type"] == "vit_b"  # the caller's dict is left alone


def test_a_config_file_that_is_not_an_object_is_refused(tmp_path):
    items, opts = tmp_path / "items.jsonl", tmp_path / "opts.json"
    items.write_text("{}\n")
    opts.write_text("[1, 2]")
    result = runner.invoke(app, ["generate", str(items), "--out", str(tmp_path / "o"), "--config", str(opts)])
    assert result.exit_code == 2 and "must hold a JSON object of options, got list" in result.output


# --- mfpo options -----------------------------------------------------------------------------


def schema_leaves(schema: dict[str, Any], node: dict[str, Any] | None = None, prefix: str = "") -> dict[str, Any]:
    """Every option path of a JSON schema with its default, walked independently of mfpo.options."""
    node = schema if node is None else node
    out: dict[str, Any] = {}
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        refs = [prop.get("$ref")] + [p.get("$ref") for p in prop.get("anyOf", [])]
        ref = next((r for r in refs if r), None)
        default = prop.get("default", "required" if name in node.get("required", []) else None)
        out[path] = {"section": True} if ref is not None and "default" not in prop else default
        if ref is not None:
            out.update(schema_leaves(schema, schema["$defs"][ref.rsplit("/", 1)[1]], f"{path}."))
    return out


def test_options_lists_every_config_option_with_type_default_and_help():
    result = runner.invoke(app, ["options"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["OPTION", "TYPE", "DEFAULT", "HELP"]
    rows = {line.split()[0]: line for line in lines[1:] if line and not line.startswith(" ")}
    leaves = schema_leaves(GenerateConfig.model_json_schema())
    assert set(rows) == set(leaves)  # every option, nothing else
    for path, default in leaves.items():
        if default != {"section": True}:  # a section's defaults are its options'
            assert json.dumps(default) in rows[path] or (default == "required" and "required" in rows[path]), path
    assert rows["keywords.top_k"].split()[:5] == ["keywords.top_k", "int", "(>=", "1)", "3"]
    assert "Number of keywords K selected per answer." in rows["keywords.top_k"]
    assert rows["perturbation.noise_step"].split()[4] == "500"
    from mfpo.options import list_options

    assert [o.name for o in list_options(GenerateConfig) if not o.help] == []  # help text on every option

    schema = runner.invoke(app, ["options", "--json-schema"])
    assert schema.exit_code == 0 and json.loads(schema.output) == GenerateConfig.model_json_schema()


# --- keywords ---------------------------------------------------------------------------------


def test_keywords_says_when_there_are_none_without_loading_the_phrase_model():
    """`mfpo keywords "Yes."` prints "(no keywords)"; importing the CLI and a text without candidates load neither
    torch nor transformers (measured: `mfpo keywords "Yes."` 2.4 s, one sentence 7.3 s, most of it MiniLM)."""
    script = (
        "import sys\n"
        "import mfpo.cli\n"
        "heavy = ('torch', 'transformers', 'datasets', 'pyarrow', 'textblob', 'fastapi', 'celery', 'numpy')\n"
        "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n"
        "try:\n"
        "    mfpo.cli.app(['keywords', 'Yes.'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "(no keywords)\n"


# --- exit codes -------------------------------------------------------------------------------


def test_generate_fails_when_no_row_became_a_record(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"x{i}", "image": f"missing{i}.png", "question": "q",
                                         "chosen": "a cat", "rejected": "a dog"}) + "\n" for i in range(3)))
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", str(items), "--out", str(out), "--workers", "1", "--no-gallery"])
    assert result.exit_code == 1, result.output
    assert "error: no records: all 3 rows of" in result.output and "failures.jsonl" in result.output
    assert len((out / "failures.jsonl").read_text().splitlines()) == 3
    export = runner.invoke(app, ["export", str(out), "--format", "trl", "--out", str(tmp_path / "trl")])
    assert export.exit_code == 2 and "has no records, nothing to export" in export.output
    assert not (tmp_path / "trl").exists()

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = runner.invoke(app, ["generate", str(empty), "--out", str(tmp_path / "o2"), "--workers", "1"])
    assert result.exit_code == 1 and "has no rows" in result.output


# --- every file honours the umask -------------------------------------------------------------


@pytest.fixture
def umask_022():
    from mfpo.storage import local

    previous = os.umask(0o022)
    local._umask.cache_clear()  # LocalStore reads the umask once per process
    yield
    os.umask(previous)
    local._umask.cache_clear()


def test_every_file_generate_and_export_write_is_0644_under_umask_022(tmp_path, umask_022):
    items = generate_scenes(SynthConfig(n=3, seed=1, width=96, height=80), tmp_path / "scenes")
    with items.open("a") as fh:  # one failing row: failures.jsonl has content
        fh.write(json.dumps({"id": "bad", "image": "missing.png", "question": "q", "chosen": "a", "rejected": "b"})
                 + "\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", str(items), "--out", str(out), "--workers", "1", "--regions",
                                 "annotations"])
    assert result.exit_code == 0, result.output
    exports = tmp_path / "exports"
    for fmt in ("trl", "rlaifv", "hf", "llamafactory"):
        result = runner.invoke(app, ["export", str(out), "--format", fmt, "--out", str(exports / fmt)])
        assert result.exit_code == 0, result.output
    files = [p for root in (out, exports) for p in root.rglob("*") if p.is_file()]
    names = {p.relative_to(out).as_posix() for p in files if p.is_relative_to(out)}
    assert {"dataset.jsonl", "dataset.parquet", "failures.jsonl", "stats.json", "summary.json",
            "gallery.html"} <= names
    assert any(n.startswith("images/") for n in names) and any(n.startswith("outcomes/") for n in names)
    assert len([p for p in files if p.is_relative_to(exports)]) >= 4 + 6  # 3 parquet, info + json + images
    modes = {p.as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert {m for m in modes.values()} == {"0o644"}, {p: m for p, m in modes.items() if m != "0o644"}
    folders = [p for root in (out, exports) for p in root.rglob("*") if p.is_dir()]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {"0o755"}

    next((out / "rejected").iterdir()).unlink()  # a broken dataset: a clear error, not a traceback
    result = runner.invoke(app, ["export", str(out), "--format", "hf", "--out", str(tmp_path / "broken")])
    assert result.exit_code == 2 and "error: record" in result.output and "is missing from" in result.output


# --- SIGTERM ----------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_sigterm_stops_the_pool_workers_keeps_finished_chunks_and_says_how_to_resume(tmp_path):
    items = generate_scenes(SynthConfig(n=60, seed=2, width=160, height=128), tmp_path / "scenes")
    out = tmp_path / "out"
    argv = ["generate", str(items), "--out", str(out), "--workers", "2", "--chunk-size", "1", "--regions",
            "annotations"]
    proc = subprocess.Popen([mfpo_executable(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not any((out / "outcomes").glob("*.jsonl")):  # workers up and mid-run
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no chunk finished in 180 s"
            time.sleep(0.05)
        workers = children_of(proc.pid)
        assert len(workers) >= 2
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, stderr
    assert "stopped by SIGTERM" in stderr and "Resume with the same command" in stderr
    assert stderr.rstrip().splitlines()[-1].strip().split() == ["mfpo", *argv]
    time.sleep(0.5)
    assert [pid for pid in workers if running(pid)] == []  # no orphaned worker
    finished = list((out / "outcomes").glob("*.jsonl"))
    assert 0 < len(finished) < 60
    for path in finished:  # every chunk on disk is whole
        assert all(json.loads(line)["status"] == "done" for line in path.read_text().splitlines())
    assert not (out / "dataset.jsonl").exists() and not list(out.glob(".tmp-*"))  # no half-written manifest
    assert stdout == ""
