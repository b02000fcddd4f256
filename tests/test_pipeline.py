"""The embedded pipeline end to end: contract of every record, modes, resume, bad rows."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.embedded import run_generate
from mfpo.schemas import ResultRecord
from mfpo.synth import SynthConfig, generate_scenes


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return generate_scenes(SynthConfig(n=10, seed=3, width=192, height=160), tmp_path_factory.mktemp("scenes"))


def _records(out: Path) -> list[ResultRecord]:
    return [ResultRecord.model_validate_json(line) for line in (out / "dataset.jsonl").read_text().splitlines()]


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def check_record_contract(out: Path, rec: ResultRecord) -> None:
    """Every record: files exist, mask is where the image changed, outside is byte-identical."""
    original, rejected = _rgb(out / rec.image), _rgb(out / rec.rejected_image)
    mask = np.asarray(Image.open(out / rec.mask)) > 0
    assert original.shape == rejected.shape and mask.shape == original.shape[:2]
    assert np.array_equal(original[~mask], rejected[~mask])
    assert mask.any() and (rejected[mask] != original[mask]).mean() > 0.5
    assert rec.keywords and all(k.text for k in rec.keywords)
    assert [k.score for k in rec.keywords] == sorted((k.score for k in rec.keywords), reverse=True)
    assert rec.regions
    union_area = mask.mean()
    assert max(r.area for r in rec.regions) <= union_area + 1e-9
    assert rec.perturbation.noise_step == 500 and rec.perturbation.schedule == "linear"
    if rec.perturbation.fallback:
        assert [r.source for r in rec.regions] == ["global"] and mask.all()


def test_annotations_mode_dataset_contract(scenes, tmp_path):
    out = tmp_path / "out"
    summary = run_generate(scenes, out, GenerateConfig.model_validate({"regions": {"mode": "annotations"}}),
                           workers=2, chunk_size=2)
    assert (summary.done, summary.failed, summary.resumed) == (10, 0, 0)
    records = _records(out)
    assert [r.id for r in records] == [json.loads(line)["id"] for line in scenes.read_text().splitlines()]
    for rec in records:
        check_record_contract(out, rec)
    # synthetic answers name the annotated objects: most items find their regions
    assert summary.fallback_rate <= 0.2
    assert any(r.source == "annotations" for rec in records for r in rec.regions)
    table = pq.read_table(out / "dataset.parquet")
    assert table.num_rows == 10 and table.column("id").to_pylist() == [r.id for r in records]
    assert table.column("perturbation").to_pylist()[0]["noise_step"] == 500
    assert (out / "gallery.html").is_file() and (out / "failures.jsonl").read_text() == ""
    assert json.loads((out / "summary.json").read_text())["done"] == 10


def test_same_inputs_and_seed_give_the_same_bytes(scenes, tmp_path):
    config = GenerateConfig.model_validate({"regions": {"mode": "annotations"}, "seed": 7})
    a, b = tmp_path / "a", tmp_path / "b"
    run_generate(scenes, a, config, workers=1, gallery=False)
    run_generate(scenes, b, config, workers=2, gallery=False)
    for ra, rb in zip(_records(a), _records(b), strict=True):
        assert ra == rb
        assert (a / ra.rejected_image).read_bytes() == (b / rb.rejected_image).read_bytes()
    other = tmp_path / "c"
    run_generate(scenes, other, config.model_copy(update={"seed": 8}), workers=1, gallery=False)
    first = _records(other)[0]
    assert (other / first.rejected_image).read_bytes() != (a / _records(a)[0].rejected_image).read_bytes()


def test_global_and_random_modes(scenes, tmp_path):
    g = tmp_path / "g"
    run_generate(scenes, g, GenerateConfig.model_validate({"regions": {"mode": "global"}}), workers=1,
                 gallery=False)
    for rec in _records(g):
        assert not rec.perturbation.fallback and rec.regions[0].source == "global"
        assert rec.regions[0].area == 1.0
    r = tmp_path / "r"
    run_generate(scenes, r, GenerateConfig.model_validate({"regions": {"mode": "random"}}), workers=1,
                 gallery=False)
    for rec in _records(r):
        check_record_contract(r, rec)
        assert rec.regions[0].source == "random" and rec.regions[0].area == pytest.approx(0.2, rel=0.05)


def test_killed_run_resumes_where_it_stopped(scenes, tmp_path):
    out = tmp_path / "out"
    config = GenerateConfig.model_validate({"regions": {"mode": "annotations"}})
    run_generate(scenes, out, config, workers=1, chunk_size=3, gallery=False)
    before = (out / "dataset.jsonl").read_text()
    # a run killed after its first two chunks (6 items): the outcomes of the others were never written
    chunks = sorted((out / "outcomes").iterdir(), key=lambda p: json.loads(p.read_text().splitlines()[0])["row"])
    assert [len(p.read_text().splitlines()) for p in chunks] == [3, 3, 3, 1]
    for path in chunks[2:]:
        path.unlink()
    summary = run_generate(scenes, out, config, workers=2, chunk_size=3, gallery=False)
    assert (summary.done, summary.resumed, summary.failed) == (4, 6, 0)
    assert (out / "dataset.jsonl").read_text() == before
    again = run_generate(scenes, out, config, workers=1, chunk_size=3, gallery=False)
    assert (again.done, again.resumed) == (0, 10)
    assert json.loads((out / "summary.json").read_text())["resumed"] == 10
    # different options write new outputs, never overwrite
    changed = run_generate(scenes, out, config.model_copy(update={"seed": 1}), workers=1, chunk_size=3, gallery=False)
    assert changed.done == 10


def _png_data_uri(w: int, h: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_bad_rows_become_failures_and_the_run_goes_on(scenes, tmp_path):
    good = [json.loads(line) for line in scenes.read_text().splitlines()][:2]
    for g in good:
        g["image"] = str(scenes.parent / g["image"])
    rows = [
        json.dumps(good[0]),
        '{"id": "broken", "image": ',  # broken JSON
        json.dumps({"id": "noimage", "image": "missing.png", "question": "q", "chosen": "a cat", "rejected": "b"}),
        json.dumps({"id": "empty", "image": good[1]["image"], "question": "q", "chosen": "  ", "rejected": "b"}),
        json.dumps({"id": "huge", "image": _png_data_uri(400, 400), "question": "q", "chosen": "A green field.",
                    "rejected": "A red field."}),
        json.dumps({"id": "notimage", "image": "data:image/png;base64," + base64.b64encode(b"hello").decode(),
                    "question": "q", "chosen": "A dog.", "rejected": "A cat."}),
        json.dumps(good[1]),
        json.dumps(good[1]),  # duplicate id
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    config = GenerateConfig.model_validate({"limits": {"max_pixels": 100_000}})
    summary = run_generate(path, out, config, workers=1)
    assert summary.done == 2 and summary.failed == 6
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    by_row = {f["row"]: f for f in failures}
    assert sorted(by_row) == [1, 2, 3, 4, 5, 7]
    assert "JSON" in by_row[1]["reason"]
    assert "missing.png" in by_row[2]["reason"]
    assert "empty" in by_row[3]["reason"]
    assert "max_pixels" in by_row[4]["reason"] and "160000" in by_row[4]["reason"]
    assert by_row[5]["stage"] == "image"
    assert "duplicate id" in by_row[7]["reason"]
    assert len(_records(out)) == 2


def test_cli_generate_and_export(scenes, tmp_path):
    import subprocess
    import sys

    mfpo = shutil.which("mfpo") or str(Path(sys.executable).parent / "mfpo")
    out = tmp_path / "out"
    proc = subprocess.run([mfpo, "generate", str(scenes), "--out", str(out), "--regions", "annotations",
                           "--workers", "2", "--top-k", "2", "--seed", "5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "done 10, resumed 0, failed 0" in proc.stdout and "items/s" in proc.stdout
    assert all(len(r.keywords) <= 2 and r.perturbation.seed for r in _records(out))
    for fmt in ("trl", "rlaifv", "hf"):
        proc = subprocess.run([mfpo, "export", str(out), "--format", fmt, "--out", str(tmp_path / fmt)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    bad = subprocess.run([mfpo, "generate", str(scenes), "--out", str(out), "--noise-step", "5000"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "noise_step" in bad.stderr


def test_an_image_over_the_working_size_is_reduced_and_stays_aligned(scenes, tmp_path):
    """An item over limits.max_working_pixels is worked on reduced (memory bounded by the setting): the dataset's
    image is the reduced one, the rejected image differs from it only inside the mask, the annotation boxes were
    scaled with it, and the record says the submitted size."""
    out = tmp_path / "out"
    config = GenerateConfig.model_validate({"regions": {"mode": "annotations"},
                                            "limits": {"max_working_pixels": 96 * 80}})
    summary = run_generate(scenes, out, config, workers=1, gallery=False)
    assert summary.done == 10
    for rec in _records(out):
        assert rec.source_size == (192, 160) and rec.image.endswith(".png")
        assert Image.open(out / rec.image).size == (96, 80)
        check_record_contract(out, rec)
        annotated = [r for r in rec.regions if r.source == "annotations"]
        for region in annotated:  # boxes are in the reduced image's pixels (half the submitted size)
            assert region.box[2] <= 96 and region.box[3] <= 80
    assert any(r.regions[0].source == "annotations" for r in _records(out))
    assert pq.read_table(out / "dataset.parquet").column("source_size").to_pylist()[0] == [192, 160]


def test_system_prompt_and_provenance_travel_from_the_input_to_the_record_and_the_exports(tmp_path):
    """A TRL row's system turn and an RLAIF-V row's provenance reach the record (dataset.jsonl and .parquet) and
    come out of the exports: TRL's prompt starts with the system turn; RLAIF-V's columns hold their provenance."""
    import pyarrow as pa

    from mfpo.exporters import export_dataset

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    image = {"bytes": buf.getvalue(), "path": None}
    turn = [{"role": "user", "content": [{"type": "image", "text": None},
                                         {"type": "text", "text": "What is on the table?"}]}]
    system = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}]
    trl_rows = [{"id": f"t{i}", "prompt": (system if i == 0 else []) + turn, "images": [image],
                 "chosen": f"A red cup number {i} is on the table.", "rejected": "A blue ball is on the table."}
                for i in range(2)]
    pq.write_table(pa.Table.from_pylist(trl_rows), tmp_path / "trl.parquet")
    config = GenerateConfig.model_validate({"regions": {"mode": "global"}})
    run_generate(tmp_path / "trl.parquet", tmp_path / "trl", config, workers=1, gallery=False)
    assert [r.system for r in _records(tmp_path / "trl")] == ["Be brief.", None]
    assert pq.read_table(tmp_path / "trl" / "dataset.parquet").column("system").to_pylist() == ["Be brief.", None]
    exported = pq.read_table(export_dataset(tmp_path / "trl", "trl", tmp_path / "trl.export.parquet")).to_pylist()
    assert [[m["role"] for m in row["prompt"]] for row in exported] == [["system", "user"], ["user"]]
    assert exported[0]["prompt"][0]["content"] == [{"text": "Be brief.", "type": "text"}]

    provenance = {"ds_name": "RLAIF-V", "origin_dataset": "OK-VQA", "origin_split": "train", "idx": "17",
                  "image_path": "okvqa/17.jpg"}
    pq.write_table(pa.Table.from_pylist([{**provenance, "image": image, "question": "What is on the table?",
                                          "chosen": "A red cup.", "rejected": "A blue ball."}]),
                   tmp_path / "rlaifv.parquet")
    run_generate(tmp_path / "rlaifv.parquet", tmp_path / "rlaifv", config, workers=1, gallery=False)
    (record,) = _records(tmp_path / "rlaifv")
    assert record.source == provenance and record.id == "rlaifv-17"
    pairs = pq.read_table(tmp_path / "rlaifv" / "dataset.parquet").column("source").to_pylist()
    assert pairs == [[{"key": k, "value": v} for k, v in provenance.items()]]
    (row,) = pq.read_table(export_dataset(tmp_path / "rlaifv", "rlaifv", tmp_path / "r.parquet")).to_pylist()
    assert {k: row[k] for k in provenance} == provenance
    assert json.loads(row["mfpo"])["id"] == "rlaifv-17"


def test_an_interrupted_pool_stops_its_workers_at_once_and_keeps_no_partial_chunk(scenes, tmp_path):
    """SIGTERM reaches _run_pool as an exception (the CLI's handler raises): the workers are terminated then and
    there, not left to finish the chunks in flight (minutes with SAM) or to outlive the run."""
    import os

    from mfpo.pipeline import embedded
    from mfpo.readers import ReadItem, read_items

    def live_children() -> set[int]:
        pids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                except (OSError, ValueError):
                    continue
                if int(ppid) == os.getpid() and state != "Z":
                    pids.add(int(entry.name))
        return pids

    class Stop(BaseException):
        pass

    rows = [(e.row, e.item.model_dump(mode="json"), e.image_bytes) for e in read_items(scenes)
            if isinstance(e, ReadItem)]

    def chunks():
        yield rows[:5]
        yield rows[5:]
        raise Stop  # as a signal would, while both chunks are in flight

    before = live_children()
    config = GenerateConfig.model_validate({"regions": {"mode": "annotations"}})
    with pytest.raises(Stop):
        embedded._run_pool(chunks(), config, tmp_path / "out", 2, None)
    assert live_children() - before == set()  # the workers are gone when _run_pool returns
    assert list((tmp_path / "out").rglob("outcomes/*")) == []  # and finished nothing after the stop
