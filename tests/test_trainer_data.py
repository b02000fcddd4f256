"""Training data loads from a folder or S3, and a bad dataset fails before any step, naming records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.s3_server import running_s3_server

from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.embedded import run_generate
from mfpo.storage.s3 import S3Store
from mfpo.synth import SynthConfig, generate_scenes
from trainer.data import DatasetError, load_examples


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    items = generate_scenes(SynthConfig(n=4, seed=1, width=64, height=64), tmp_path_factory.mktemp("items"))
    out = tmp_path_factory.mktemp("dataset")
    run_generate(items, out, GenerateConfig.model_validate({"regions": {"mode": "annotations"}}), workers=1,
                 gallery=False)
    return out


def test_loads_examples_from_a_folder(dataset):
    examples = load_examples(str(dataset), words, max_answer_tokens=200)
    assert len(examples) == 4 and examples[0].image.size == examples[0].rejected_image.size == (64, 64)
    assert examples[0].image.tobytes() != examples[0].rejected_image.tobytes()


def test_loads_examples_from_s3(dataset, monkeypatch):
    with running_s3_server() as s3:
        store = S3Store(s3.config("train-data", create_bucket=True, prefix="tenants/acme/jobs/j1/out"))
        for path in dataset.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                store.put(path.relative_to(dataset).as_posix(), path.read_bytes())
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        examples = load_examples("s3://train-data/tenants/acme/jobs/j1/out", words, max_answer_tokens=200)
        assert [e.id for e in examples] == [e.id for e in load_examples(str(dataset), words, 200)]


def test_bad_records_fail_before_training_with_ids_and_reasons(dataset, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for path in dataset.rglob("*"):
        if path.is_file():
            target = bad / path.relative_to(dataset)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    records = [json.loads(line) for line in (bad / "dataset.jsonl").read_text().splitlines()]
    (bad / records[1]["rejected_image"]).unlink()
    records[2]["chosen"] = "word " * 300
    (bad / "dataset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(DatasetError) as err:
        load_examples(str(bad), words, max_answer_tokens=200)
    message = str(err.value)
    assert "2 problem(s)" in message
    assert f"{records[1]['id']}: missing image" in message
    assert f"{records[2]['id']}: chosen answer is 300 tokens, over max_answer_tokens=200" in message
    with pytest.raises(DatasetError, match=r"no dataset\.jsonl"):
        load_examples(str(tmp_path / "empty"), words, 200)


def test_each_loss_trains_on_its_own_negatives_and_fails_at_once_without_them(dataset, tmp_path):
    from PIL import Image

    from trainer.config import TrainConfig
    from trainer.data import require_dataset

    assert [TrainConfig(loss=loss).negatives_kind for loss in ("mfpo", "mdpo", "adavip", "dpo")] == [
        "mfpo", "mdpo", "adavip", None]
    # a dataset of MFPO's noise alone: the mdpo loss is refused before any model would load, with what to do
    with pytest.raises(DatasetError, match=r"no 'mdpo' rejected images \(it holds: mfpo\).*--negatives mfpo,mdpo"):
        require_dataset(str(dataset), TrainConfig(loss="mdpo").negatives_kind)
    require_dataset(str(dataset), "mfpo")
    with pytest.raises(DatasetError, match="no 'adavip' rejected images"):
        load_examples(str(dataset), words, 200, negatives="adavip")
    # a dataset holding several kinds: each loss picks its own column
    items = generate_scenes(SynthConfig(n=3, seed=5, width=80, height=64), tmp_path / "items")
    config = GenerateConfig.model_validate({"regions": {"mode": "annotations"},
                                            "negatives": {"kinds": ["mfpo", "mdpo", "global"]}})
    run_generate(items, tmp_path / "multi", config, workers=1, gallery=False)
    mdpo = load_examples(str(tmp_path / "multi"), words, 200, negatives=TrainConfig(loss="mdpo").negatives_kind)
    mfpo = load_examples(str(tmp_path / "multi"), words, 200, negatives="mfpo")
    assert [e.rejected_image.size for e in mdpo] == [(336, 336)] * 3  # mDPO's crop of the model's square
    assert [e.rejected_image.size for e in mfpo] == [(80, 64)] * 3
    first = json.loads((tmp_path / "multi" / "dataset.jsonl").read_text().splitlines()[0])
    with Image.open(tmp_path / "multi" / first["negatives"]["global"]["image"]) as noised:
        assert noised.size == (80, 64)
