"""`mfpo export --format llamafactory`: a folder LLaMA-Factory trains on, checked against a JSON schema written
from its data/README.md (tests/data/llamafactory/) and against how its loader reads rows and images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import jsonschema
import pytest

from mfpo.exporters import export_dataset
from mfpo.exporters.llamafactory import DATA_FILE, DATASET_NAME, INFO_FILE
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.embedded import run_generate
from mfpo.schemas import ResultRecord
from mfpo.synth import SynthConfig, generate_scenes

SCHEMA = json.loads((Path(__file__).parent / "data" / "llamafactory" / "sharegpt_preference.schema.json").read_text())
ODD_TAGS, EVEN_TAGS = ("human", "observation"), ("gpt", "function_call")  # README: roles by position


def validator(definition: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": SCHEMA["$defs"]})


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("llamafactory")
    items = generate_scenes(SynthConfig(n=3, seed=2, width=64, height=64), root / "items")
    run_generate(items, root / "dataset", GenerateConfig.model_validate({"regions": {"mode": "annotations"}}),
                 workers=1, gallery=False)
    info = export_dataset(root / "dataset", "llamafactory", root / "lf")
    records = [ResultRecord.model_validate_json(line)
               for line in (root / "dataset" / "dataset.jsonl").read_text().splitlines() if line.strip()]
    return {"root": root, "info": info, "dest": root / "lf", "records": records}


def test_dataset_info_and_rows_follow_the_documented_schema(exported):
    info = json.loads(exported["info"].read_text())
    validator("dataset_info").validate(info)
    validator("sharegpt_preference_description").validate(info[DATASET_NAME])
    rows = json.loads((exported["dest"] / info[DATASET_NAME]["file_name"]).read_text())
    validator("data_file").validate(rows)
    assert len(rows) == len(exported["records"]) == 3


def test_the_schema_is_strict_enough_to_fail():
    entry = {"file_name": "x.json", "formatting": "sharegpt", "ranking": True,
             "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "images": "images"}}
    validator("sharegpt_preference_description").validate(entry)
    for bad in ({**entry, "columns": {**entry["columns"], "rejected_images": "rejected_images"}},  # not documented
                {**entry, "ranking": False}, {k: v for k, v in entry.items() if k != "file_name"}):
        assert not validator("sharegpt_preference_description").is_valid(bad)
    row = {"conversations": [{"from": "human", "value": "<image>q"}], "chosen": {"from": "gpt", "value": "a"},
           "rejected": {"from": "gpt", "value": "b"}, "images": ["i.png"]}
    validator("row").validate(row)
    bad_rows = ({**row, "chosen": "a"}, {**row, "rejected": {"from": "human", "value": "b"}}, {**row, "images": []})
    for bad_row in bad_rows:
        assert not validator("row").is_valid(bad_row)


def test_rows_are_what_llamafactorys_converter_accepts_with_the_records_content(exported):
    """The README's rules beyond the schema (SharegptDatasetConverter: odd positions human/observation, even
    gpt/function_call, an odd number of turns for ranking data; one <image> per image), and the content."""
    dest = exported["dest"]
    rows = json.loads((dest / DATA_FILE).read_text())
    for row, record in zip(rows, exported["records"], strict=True):
        turns = row["conversations"]
        assert len(turns) % 2 == 1
        assert all(t["from"] in (ODD_TAGS, EVEN_TAGS)[i % 2] for i, t in enumerate(turns))
        assert sum(t["value"].count("<image>") for t in turns) == len(row["images"]) == 1
        assert turns[0]["value"] == f"<image>{record.question}"
        assert (row["chosen"]["value"], row["rejected"]["value"], row["id"]) == (record.chosen, record.rejected,
                                                                                  record.id)


def test_images_resolve_from_media_dir_and_the_rejected_image_rides_in_an_extra_column(exported):
    """LLaMA-Factory joins each path to media_dir (default: dataset_dir); rejected_images is aligned with images."""
    dest, source = exported["dest"], exported["root"] / "dataset"
    rows = json.loads((dest / DATA_FILE).read_text())
    for row, record in zip(rows, exported["records"], strict=True):
        (image,), (rejected,) = row["images"], row["rejected_images"]
        assert os.path.isfile(os.path.join(dest, image)) and os.path.isfile(os.path.join(dest, rejected))
        assert (dest / image).read_bytes() == (source / record.image).read_bytes()
        assert (dest / rejected).read_bytes() == (source / record.rejected_image).read_bytes()
        assert (dest / image).read_bytes() != (dest / rejected).read_bytes()


def test_the_json_loader_llamafactory_uses_reads_every_column(exported):
    """LLaMA-Factory loads a local `.json` file with `datasets.load_dataset("json", data_files=...)`."""
    loaded = datasets.load_dataset("json", data_files=str(exported["dest"] / DATA_FILE), split="train")
    assert set(loaded.column_names) == {"conversations", "system", "chosen", "rejected", "images", "rejected_images",
                                        "id"}
    assert loaded[0]["chosen"] == {"from": "gpt", "value": exported["records"][0].chosen}


def test_cli_exports_llamafactory(exported, tmp_path):
    mfpo = str(Path(sys.executable).parent / "mfpo")
    run = subprocess.run([mfpo, "export", str(exported["root"] / "dataset"), "--format", "llamafactory", "--out",
                          str(tmp_path / "lf")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"wrote {tmp_path / 'lf' / INFO_FILE}"
    assert (tmp_path / "lf" / DATA_FILE).read_bytes() == (exported["dest"] / DATA_FILE).read_bytes()


def test_the_system_prompt_goes_to_the_mapped_system_column(exported):
    from mfpo.exporters.llamafactory import dataset_info_entry, llamafactory_example

    record = exported["records"][0].model_copy(update={"system": "You are a careful describer."})
    assert llamafactory_example(record)["system"] == "You are a careful describer."
    assert llamafactory_example(exported["records"][0])["system"] == ""
    assert dataset_info_entry()["columns"]["system"] == "system"
