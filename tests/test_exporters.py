"""Exporters: TRL, RLAIF-V and HF Parquet files that load back with exact image bytes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mfpo.exporters import EmptyDatasetError, export_dataset
from mfpo.images import encode_png
from mfpo.negatives.config import NEGATIVE_KINDS
from mfpo.readers import ReadItem, read_items
from mfpo.schemas import KeywordScore, PerturbationRecord, RegionRecord, ResultRecord


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def out_dir(tmp_path) -> Path:
    """A dataset folder as ``mfpo generate`` leaves it: 3 records, originals, rejected, masks."""
    out = tmp_path / "OUT"
    for sub in ("images", "rejected", "masks"):
        (out / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        original = rng.integers(0, 256, (6 + i, 8, 3), dtype=np.uint8)
        rejected = original.copy()
        rejected[:2, :3] = 255 - rejected[:2, :3]
        mask = np.zeros(original.shape[:2], np.uint8)
        mask[:2, :3] = 255
        stem = f"item-{i}-0123456789ab"
        ext = ".jpg" if i == 2 else ".png"
        (out / "images" / f"{stem}{ext}").write_bytes(jpeg(original) if i == 2 else encode_png(original))
        (out / "rejected" / f"{stem}.png").write_bytes(encode_png(rejected))
        (out / "masks" / f"{stem}.png").write_bytes(encode_png(mask))
        record = ResultRecord(
            id=f"item-{i}",
            question=f"What is in picture {i}?",
            chosen=f"A red cup number {i}.",
            rejected=f"A blue cup number {i}.",
            image=f"images/{stem}{ext}",
            rejected_image=f"rejected/{stem}.png",
            mask=f"masks/{stem}.png",
            keywords=[KeywordScore(text="red cup", score=0.25 + i)],
            regions=[RegionRecord(keyword="red cup", box=(0.0, 0.0, 3.0, 2.0), source="annotations",
                                  area=6 / original[..., 0].size)],
            perturbation=PerturbationRecord(mode="annotations", noise_step=500, schedule="linear",
                                            seed=2**62 + i, fallback=i == 1),
        )
        lines.append(record.model_dump_json())
    (out / "dataset.jsonl").write_text("\n".join(lines) + "\n")
    return out


def records(out: Path) -> list[ResultRecord]:
    lines = (out / "dataset.jsonl").read_text().splitlines()
    return [ResultRecord.model_validate_json(line) for line in lines]


def element(feature: object) -> object:
    """The element feature of a list feature (``[f]`` in datasets 2.x, ``List(f)`` later)."""
    return feature[0] if isinstance(feature, list) else feature.feature  # type: ignore[attr-defined]


def load_hf(path: Path, cache: Path) -> datasets.Dataset:
    return datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(cache))


def test_trl_export_layout_bytes_and_features(out_dir, tmp_path):
    path = export_dataset(out_dir, "trl", tmp_path / "trl")
    assert path == tmp_path / "trl" / "train.parquet"
    table = pq.read_table(path)
    assert table.column_names == ["id", "prompt", "chosen", "rejected", "images", "rejected_images"]
    rows = table.to_pylist()
    recs = records(out_dir)
    assert [r["id"] for r in rows] == ["item-0", "item-1", "item-2"]
    assert rows[0]["prompt"] == [{"content": [{"text": None, "type": "image"},
                                              {"text": "What is in picture 0?", "type": "text"}],
                                  "role": "user"}]
    assert rows[1]["chosen"] == [{"content": [{"text": "A red cup number 1.", "type": "text"}],
                                  "role": "assistant"}]
    assert rows[2]["rejected"][0]["content"][0]["text"] == "A blue cup number 2."
    for row, rec in zip(rows, recs, strict=True):
        original = (out_dir / rec.image).read_bytes()
        assert row["images"] == [{"bytes": original, "path": rec.image.split("/")[1]}]
        assert row["rejected_images"][0]["bytes"] == (out_dir / rec.rejected_image).read_bytes()

    ds = load_hf(path, tmp_path / "cache")
    assert isinstance(element(ds.features["images"]), datasets.Image)
    assert isinstance(element(ds.features["rejected_images"]), datasets.Image)
    first = ds[0]
    decoded = Image.open(io.BytesIO((out_dir / recs[0].image).read_bytes()))
    assert np.array_equal(np.asarray(first["images"][0]), np.asarray(decoded))
    assert first["prompt"][0]["content"][1]["text"] == "What is in picture 0?"


def test_trl_export_reads_back_as_items(out_dir, tmp_path):
    path = export_dataset(out_dir, "trl", tmp_path / "x.parquet")
    assert path == tmp_path / "x.parquet"
    items = list(read_items(path))
    assert all(isinstance(i, ReadItem) for i in items)
    recs = records(out_dir)
    for entry, rec in zip(items, recs, strict=True):
        assert isinstance(entry, ReadItem)
        assert (entry.item.id, entry.item.question, entry.item.chosen, entry.item.rejected) == (
            rec.id, rec.question, rec.chosen, rec.rejected)
        assert entry.image_bytes == (out_dir / rec.image).read_bytes()


def test_rlaifv_export_layout_and_round_trip(out_dir, tmp_path):
    path = export_dataset(out_dir, "rlaifv", tmp_path / "rlaifv")
    rows = pq.read_table(path).to_pylist()
    recs = records(out_dir)
    assert list(rows[0]) == ["ds_name", "image", "question", "chosen", "rejected", "origin_dataset",
                             "origin_split", "idx", "image_path", "rejected_image", "system", "mfpo"]
    assert {r["ds_name"] for r in rows} == {"mfpo"}  # records without provenance: ours stand in
    assert [r["idx"] for r in rows] == [r.id for r in recs]
    assert [r["origin_split"] for r in rows] == [None] * 3
    assert rows[2]["image_path"] == recs[2].image and rows[2]["image"]["path"].endswith(".jpg")
    meta = json.loads(rows[1]["mfpo"])
    assert meta["perturbation"]["fallback"] is True and meta["keywords"] == ["red cup"] and meta["id"] == "item-1"
    for row, rec in zip(rows, recs, strict=True):
        assert row["image"]["bytes"] == (out_dir / rec.image).read_bytes()
        assert row["rejected_image"]["bytes"] == (out_dir / rec.rejected_image).read_bytes()

    ds = load_hf(path, tmp_path / "cache")
    assert isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds.features["rejected_image"], datasets.Image)
    assert ds[2]["image"].format == "JPEG" and ds[2]["image"].size == (8, 8)

    items = list(read_items(path))  # detected as rlaifv; rejected_image is ignored
    assert [i.item.id for i in items] == ["rlaifv-item-0", "rlaifv-item-1", "rlaifv-item-2"]  # type: ignore[union-attr]
    assert items[0].image_bytes == (out_dir / recs[0].image).read_bytes()  # type: ignore[union-attr]


def test_hf_export_has_real_image_and_nested_features(out_dir, tmp_path):
    path = export_dataset(out_dir, "hf", tmp_path / "hf", rows_per_group=2)
    assert pq.ParquetFile(path).metadata.num_row_groups == 2
    ds = load_hf(path, tmp_path / "cache")
    for name in ("image", "rejected_image", "mask"):
        assert isinstance(ds.features[name], datasets.Image)
    assert element(ds.features["keywords"])["score"] == datasets.Value("float64")  # type: ignore[index]
    assert element(ds.features["regions"])["box"].length == 4  # type: ignore[index]
    assert ds.features["perturbation"]["seed"] == datasets.Value("int64")
    row = ds[1]
    assert row["id"] == "item-1"
    assert row["keywords"] == [{"text": "red cup", "score": 1.25}]
    assert row["regions"][0]["box"] == [0.0, 0.0, 3.0, 2.0]
    assert row["perturbation"] == {"mode": "annotations", "noise_step": 500, "schedule": "linear",
                                   "seed": 2**62 + 1, "fallback": True}
    mask = np.asarray(row["mask"])
    assert mask.shape == (7, 8) and mask[:2, :3].min() == 255 and mask.sum() == 6 * 255
    raw = pq.read_table(path, columns=["rejected_image"]).to_pylist()
    recs = records(out_dir)
    expected = [(out_dir / r.rejected_image).read_bytes() for r in recs]
    assert [r["rejected_image"]["bytes"] for r in raw] == expected


def test_export_errors_are_clear(out_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'csv': use one of trl, rlaifv, hf"):
        export_dataset(out_dir, "csv", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match=r"dataset\.jsonl not found"):
        export_dataset(tmp_path / "empty", "hf", tmp_path / "x")
    assert not (tmp_path / "empty").exists() and not (tmp_path / "x").exists()
    rec = records(out_dir)[1]
    (out_dir / rec.mask).unlink()
    missing = r"record 'item-1': image 'masks/item-1-0123456789ab\.png' is missing"
    with pytest.raises(FileNotFoundError, match=missing):
        export_dataset(out_dir, "hf", tmp_path / "hf")
    assert not (tmp_path / "hf" / "train.parquet").exists()  # nothing half-written
    assert list((tmp_path / "hf").iterdir()) == []
    bad = rec.model_copy(update={"image": "../outside.png"})
    (out_dir / "dataset.jsonl").write_text(bad.model_dump_json() + "\n")
    outside = r"record 'item-1': image path '\.\./outside\.png' is not a relative path"
    with pytest.raises(ValueError, match=outside):
        export_dataset(out_dir, "trl", tmp_path / "trl")


def test_an_empty_dataset_is_refused_because_datasets_cannot_load_zero_rows(tmp_path):
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "dataset.jsonl").write_text("")
    (out / "failures.jsonl").write_text('{"row": 0, "reason": "x", "stage": "image"}\n')
    for fmt in ("trl", "rlaifv", "hf", "llamafactory"):
        with pytest.raises(EmptyDatasetError, match=r"no records, nothing to export; its failures .*failures\.jsonl"):
            export_dataset(out, fmt, tmp_path / fmt)
        assert not (tmp_path / fmt).exists()
    # why: a zero-row Parquet with the full features is what an export would be, and datasets refuses to load it
    # (if a datasets release starts loading it, write the empty table instead of refusing)
    from mfpo.exporters.hf import hf_features

    features = hf_features()
    empty = tmp_path / "empty.parquet"
    with pq.ParquetWriter(empty, features.arrow_schema) as writer:
        writer.write_table(features.arrow_schema.empty_table())
    with pytest.raises(Exception) as refused:  # datasets wraps the cause
        load_hf(empty, tmp_path / "cache")
    chain, error = [], refused.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("BatchSize must be greater than 0" in m or "corresponds to no data" in m for m in chain), chain


def test_exports_keep_the_system_prompt_and_the_inputs_provenance(out_dir, tmp_path):
    provenance = {"ds_name": "RLAIF-V", "origin_dataset": "OK-VQA", "origin_split": '{"model": "llava"}',
                  "idx": "17", "image_path": "okvqa/17.jpg", "note": "kept in mfpo.source"}
    recs = records(out_dir)
    recs[0] = recs[0].model_copy(update={"system": "Be brief.", "source": provenance})
    (out_dir / "dataset.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in recs))

    trl = pq.read_table(export_dataset(out_dir, "trl", tmp_path / "trl.parquet")).to_pylist()
    assert trl[0]["prompt"] == [
        {"content": [{"text": "Be brief.", "type": "text"}], "role": "system"},
        {"content": [{"text": None, "type": "image"}, {"text": "What is in picture 0?", "type": "text"}],
         "role": "user"},
    ]
    assert [m["role"] for m in trl[1]["prompt"]] == ["user"]
    (back, *_) = read_items(tmp_path / "trl.parquet")  # and it reads back as the same item
    assert isinstance(back, ReadItem) and (back.item.system, back.item.question) == ("Be brief.",
                                                                                     "What is in picture 0?")

    rlaifv = pq.read_table(export_dataset(out_dir, "rlaifv", tmp_path / "rlaifv.parquet")).to_pylist()
    theirs = {k: rlaifv[0][k] for k in ("ds_name", "origin_dataset", "origin_split", "idx", "image_path")}
    assert theirs == {k: v for k, v in provenance.items() if k != "note"}  # theirs, unchanged
    ours = json.loads(rlaifv[0]["mfpo"])  # ours, in a column of its own
    assert (ours["id"], ours["image_path"], ours["source"]) == ("item-0", recs[0].image, provenance)
    assert ours["perturbation"]["noise_step"] == 500
    assert (rlaifv[0]["system"], rlaifv[1]["system"]) == ("Be brief.", None)
    (again, *_) = read_items(tmp_path / "rlaifv.parquet")  # re-reading keeps their provenance and the system
    assert isinstance(again, ReadItem) and again.item.id == "rlaifv-17" and again.item.system == "Be brief."
    assert again.item.source == {k: v for k, v in provenance.items() if k != "note"}

    hf = load_hf(export_dataset(out_dir, "hf", tmp_path / "hf.parquet"), tmp_path / "cache")
    kinds = {f"rejected_image_{kind}" for kind in NEGATIVE_KINDS} | {"rejected_mbpo"}
    assert set(hf.features) == set(ResultRecord.model_fields) | kinds  # every record field, a column per kind
    row = hf[0]
    assert row["system"] == "Be brief." and dict((p["key"], p["value"]) for p in row["source"]) == provenance
    assert hf[1]["system"] is None and hf[1]["source"] is None and hf[1]["source_size"] is None
