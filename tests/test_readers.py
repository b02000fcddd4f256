"""Readers: every public input format, detection, and rows that fail with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mfpo.images import ImageLimits, encode_png
from mfpo.readers import FORMATS, ReadItem, detect_format, read_items
from mfpo.readers.base import dataset_id
from mfpo.readers.files import iter_parquet_rows
from mfpo.readers.vlfeedback import rating
from mfpo.schemas import Failure

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png(seed: int = 0, size: int = 6) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def write_jsonl(path: Path, rows: list[object]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_all(path: Path, fmt: str | None = None, **kw: object) -> list[ReadItem | Failure]:
    return list(read_items(path, fmt, **kw))  # type: ignore[arg-type]


def item(question: str = "What is on the table?", chosen: str = "A red cup.", **extra: object) -> dict:
    return {"image": "imgs/a.png", "question": question, "chosen": chosen, "rejected": "A blue cup.", **extra}


# --- native ---------------------------------------------------------------------------------


def test_native_jsonl_resolves_paths_and_keeps_annotations(tmp_path):
    row = item(id="cup-1", annotations=[{"label": "red cup", "box": [1, 2, 5, 6]},
                                         {"label": "table", "polygon": [[0, 0], [5, 0], [0, 5]]}])
    path = write_jsonl(tmp_path / "items.jsonl", [row, item(image="https://example.org/b.jpg")])
    first, second = read_all(path)
    assert isinstance(first, ReadItem) and isinstance(second, ReadItem)
    assert (first.row, first.item.id, first.image_bytes) == (0, "cup-1", None)
    assert first.item.image == str((tmp_path / "imgs" / "a.png").resolve())
    assert [a.label for a in first.item.annotations] == ["red cup", "table"]
    assert first.item.annotations[0].box == (1.0, 2.0, 5.0, 6.0)
    assert second.item.image == "https://example.org/b.jpg" and second.item.id is None


def test_broken_json_line_in_the_middle_fails_and_reading_goes_on(tmp_path):
    lines = [item(), '{"image": "a.png", "question": ', "", item(), "[1, 2]"]
    path = write_jsonl(tmp_path / "items.jsonl", lines)
    entries = read_all(path)
    assert [type(e).__name__ for e in entries] == ["ReadItem", "Failure", "ReadItem", "Failure"]
    broken = entries[1]
    assert isinstance(broken, Failure)
    assert (broken.row, broken.stage) == (1, "read")
    assert broken.reason.startswith("invalid JSON on line 2:")
    assert broken.raw == '{"image": "a.png", "question": '
    assert entries[2].row == 3  # a blank line keeps its number: row i is line i + 1
    assert isinstance(entries[3], Failure) and "expected a JSON object" in entries[3].reason


def test_invalid_utf8_line_fails_and_a_bom_is_accepted(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(item()).encode() + b"\n" + b'{"question": "\xff\xfe"}\n')
    good, bad = read_all(path)
    assert isinstance(good, ReadItem) and good.item.chosen == "A red cup."
    assert isinstance(bad, Failure) and bad.row == 1 and "utf-8" in bad.reason and bad.stage == "read"


def test_missing_image_empty_chosen_and_unknown_key_fail_with_readable_reasons(tmp_path):
    no_image = item()
    del no_image["image"]
    rows = [no_image, item(chosen="   "), item(rejcted="typo"), item(id="../escape")]
    failures = read_all(write_jsonl(tmp_path / "items.jsonl", rows), "native")
    assert all(isinstance(f, Failure) and f.stage == "validate" for f in failures)
    assert [f.reason for f in failures[:3]] == [  # type: ignore[union-attr]
        "image: field required",
        "chosen: text is empty",
        "rejcted: unknown field",
    ]
    assert "id: id '../escape' is not allowed" in failures[3].reason  # type: ignore[union-attr]
    assert failures[1].raw == item(chosen="   ")  # type: ignore[union-attr]


def test_json_array_file_is_read(tmp_path):
    path = tmp_path / "items.json"
    path.write_text(json.dumps([item(), item(question="Which color?")]))
    assert [e.item.question for e in read_all(path)] == ["What is on the table?", "Which color?"]  # type: ignore[union-attr]


def test_unknown_format_file_type_missing_file_and_undetectable_keys(tmp_path):
    path = write_jsonl(tmp_path / "items.jsonl", [{"foo": 1, "bar": 2}])
    with pytest.raises(ValueError, match="unknown input format 'llava': use one of native, rlhfv, rlaifv"):
        read_items(path, "llava")
    with pytest.raises(ValueError, match=r"cannot detect the input format .*\['bar', 'foo'\].*vlfeedback"):
        read_all(path)
    (tmp_path / "items.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"unsupported input file type '\.csv'"):
        read_items(tmp_path / "items.csv")
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        read_items(tmp_path / "nope.jsonl")
    assert FORMATS == ("native", "rlhfv", "rlaifv", "trl", "vlfeedback")


# --- RLHF-V / RLAIF-V Parquet ---------------------------------------------------------------


def test_rlhfv_parquet_inline_bytes_and_text_json(tmp_path):
    images = [png(1), png(2)]
    table = pa.table(
        {
            "ds_name": ["RLHF-V", "RLHF-V"],
            "image": pa.array([{"bytes": images[0], "path": "x.jpg"}, {"bytes": images[1], "path": None}],
                              IMAGE_STRUCT),
            "text": [json.dumps({"question": "Describe.", "chosen": "A dog.", "rejected": "A cat."}),
                     "{not json"],
            "origin_dataset": ["vg", "vg"],
            "origin_split": ["{}", "{}"],
            "idx": pa.array([7, 8], pa.int64()),
            "image_path": ["a.jpg", "b.jpg"],
        }
    )
    pq.write_table(table, tmp_path / "rlhfv.parquet")
    good, bad = read_all(tmp_path / "rlhfv.parquet")
    assert detect_format(table.slice(0, 1).to_pylist()[0]) == "rlhfv"
    assert isinstance(good, ReadItem)
    assert (good.item.id, good.item.image, good.item.question, good.item.chosen) == (
        "rlhfv-7", "inline:row-0", "Describe.", "A dog.")
    assert good.image_bytes == images[0]
    assert isinstance(bad, Failure) and bad.id == "rlhfv-8" and bad.stage == "validate"
    assert bad.reason.startswith("text: not valid JSON")
    assert bad.raw["image"] == {"bytes": f"<{len(images[1])} bytes>", "path": None}  # type: ignore[index]


def rlaifv_table(rows: list[dict]) -> pa.Table:
    cols = ["ds_name", "image", "question", "chosen", "rejected", "origin_dataset", "origin_split", "idx",
            "image_path"]
    data = {c: [r.get(c) for r in rows] for c in cols}
    data["image"] = pa.array(data["image"], IMAGE_STRUCT)
    return pa.table(data)


def test_rlaifv_parquet_ids_detection_and_failures(tmp_path):
    img = png(3)
    base = {"ds_name": "RLAIF-V", "question": "What is it?", "chosen": "A kite.", "rejected": "A bird.",
            "origin_dataset": "OK-VQA", "origin_split": "{}", "image_path": "p.jpg"}
    (tmp_path / "local.png").write_bytes(img)
    rows = [
        {**base, "image": {"bytes": img, "path": None}, "idx": "OmniLMM/12 b"},
        {**base, "image": {"bytes": None, "path": "local.png"}, "idx": "13"},
        {**base, "image": None, "idx": "14"},
        {**base, "image": {"bytes": img, "path": None}, "idx": "15", "chosen": ""},
    ]
    pq.write_table(rlaifv_table(rows), tmp_path / "rlaifv.parquet")
    a, b, c, d = read_all(tmp_path / "rlaifv.parquet")
    assert isinstance(a, ReadItem) and a.item.id == "rlaifv-OmniLMM_12_b" and a.image_bytes == img
    assert isinstance(b, ReadItem) and b.item.image == str((tmp_path / "local.png").resolve())
    assert b.image_bytes is None
    assert isinstance(c, Failure) and (c.id, c.reason) == ("rlaifv-14", "image: missing image")
    assert isinstance(d, Failure) and d.id == "rlaifv-15" and d.reason == "chosen: text is empty"


def test_inline_image_over_max_bytes_fails_at_read(tmp_path):
    img = png(4, size=32)
    row = {"ds_name": "RLAIF-V", "image": {"bytes": img, "path": None}, "question": "q", "chosen": "c",
           "rejected": "r", "idx": "1"}
    pq.write_table(rlaifv_table([row]), tmp_path / "r.parquet")
    [failure] = read_all(tmp_path / "r.parquet", limits=ImageLimits(max_bytes=100))
    assert isinstance(failure, Failure) and failure.stage == "image"
    assert failure.reason == f"inline image is {len(img)} bytes, over max_bytes=100"


def test_parquet_is_read_in_batches_across_row_groups(tmp_path):
    n = 23
    rows = [{"ds_name": "RLAIF-V", "image": {"bytes": png(i, 2), "path": None}, "question": f"q{i}",
             "chosen": "c", "rejected": "r", "idx": str(i)} for i in range(n)]
    path = tmp_path / "many.parquet"
    pq.write_table(rlaifv_table(rows), path, row_group_size=5)
    assert pq.ParquetFile(path).metadata.num_row_groups == 5
    for batch_size in (1, 4, 64):
        entries = read_all(path, batch_size=batch_size)
        assert [e.row for e in entries] == list(range(n))
        assert [e.item.question for e in entries] == [f"q{i}" for i in range(n)]  # type: ignore[union-attr]
    lazy = iter_parquet_rows(path, batch_size=4)
    assert next(lazy)[0] == 0  # type: ignore[index]
    lazy.close()  # type: ignore[attr-defined]


# --- TRL ------------------------------------------------------------------------------------


def conversational(question: str, chosen: str, rejected: str) -> dict:
    return {
        "prompt": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                   {"role": "user", "content": [{"type": "image", "text": None},
                                                {"type": "text", "text": question}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
    }


def test_trl_conversational_parquet_with_image_bytes(tmp_path):
    img = png(5)
    rows = [
        {**conversational("What animal?", "A cat on a mat.", "A dog on a mat."),
         "images": [{"bytes": img, "path": "a.png"}]},
        {**conversational("Two?", "x", "y"), "images": [{"bytes": img, "path": None}] * 2},
        {"prompt": [{"role": r, "content": [{"type": "text", "text": t}]}
                    for r, t in (("user", "Hi"), ("assistant", "Hello"), ("user", "And?"))],
         **{k: v for k, v in conversational("", "a", "b").items() if k != "prompt"},
         "images": [{"bytes": img, "path": None}]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "trl.parquet")
    good, two, multi = read_all(tmp_path / "trl.parquet")
    assert isinstance(good, ReadItem) and good.image_bytes == img
    assert (good.item.question, good.item.chosen, good.item.rejected) == (
        "What animal?", "A cat on a mat.", "A dog on a mat.")
    assert isinstance(two, Failure) and two.reason == "images: MFPO items have exactly one image, got 2"
    assert isinstance(multi, Failure)
    assert multi.reason == "prompt: expected a single-turn prompt (one user message), got roles " \
                           "['user', 'assistant', 'user']"


def test_trl_plain_strings_with_image_paths(tmp_path):
    rows = [{"id": "t 1", "prompt": "<image>\nWhat is shown?", "chosen": "A tree.", "rejected": "A car.",
             "images": ["pics/t.png"]},
            {"prompt": "<image>", "chosen": "A tree.", "rejected": "A car.", "image": "t.png"}]
    first, second = read_all(write_jsonl(tmp_path / "trl.jsonl", rows))
    assert detect_format(rows[0]) == "trl"
    assert isinstance(first, ReadItem)
    assert (first.item.id, first.item.question) == ("t_1", "What is shown?")
    assert first.item.image == str((tmp_path / "pics" / "t.png").resolve())
    assert isinstance(second, Failure) and second.reason == "question: text is empty"


# --- VLFeedback -----------------------------------------------------------------------------


def completion(model: str, response: str, helpful: object, faithful: object, ethical: object) -> dict:
    return {"model": model, "response": response, "annotations": {
        "Helpfulness": {"Rating": helpful, "Rationale": "..."},
        "Visual Faithfulness": {"Rating": faithful, "Rationale": "..."},
        "Ethical Considerations": {"Rating": ethical, "Rationale": "..."},
    }}


def test_vlfeedback_pair_rule(tmp_path):
    rows = [
        {"id": "svit-1", "prompt": "Describe the scene.", "img_path": "imgs/1.jpg", "completions": [
            completion("m0", "resp0", "4", "3", "5"),    # mean 4.0, VF 3
            completion("m1", "resp1", "3", "4", "5"),    # mean 4.0, VF 4 -> chosen (tie broken by VF)
            completion("m2", "resp2", "2", "1", "N/A"),  # mean 1.5 -> rejected
            completion("m3", "resp3", "5", "5", "5") | {"response": ""},  # no response: not eligible
        ]},
        {"id": "same", "prompt": "p", "img_path": "i.jpg", "completions": [
            completion("a", "x", "4", "4", "4"), completion("b", "y", 4, "4", "4.0")]},
        {"id": "one", "prompt": "p", "img_path": "i.jpg", "completions": [
            completion("a", "x", "4", "4", "4"), completion("b", "y", "N/A", "", None)]},
    ]
    chosen_row, tie, single = read_all(write_jsonl(tmp_path / "vlf.jsonl", rows))
    assert isinstance(chosen_row, ReadItem)
    it = chosen_row.item
    assert (it.id, it.question) == ("vlfeedback-svit-1", "Describe the scene.")
    assert (it.chosen, it.rejected) == ("resp1", "resp2")
    assert it.image == str((tmp_path / "imgs" / "1.jpg").resolve())
    assert isinstance(tie, Failure) and tie.id == "vlfeedback-same"
    assert tie.reason == (
        "completions: all 2 rated completions score the same (mean 4.00, Visual Faithfulness 4); "
        "no preference to learn"
    )
    assert isinstance(single, Failure) and "1 of 2 completions" in single.reason


def test_vlfeedback_ratings_and_ids_helpers():
    values = ("4", 3, " 2.5 ", "N/A", "", None, True, "nan")
    assert [rating(v) for v in values] == [4.0, 3.0, 2.5, None, None, None, None, None]
    assert dataset_id("rlaifv", 123) == "rlaifv-123"
    assert dataset_id(None, "..//x") == "id__x"
    assert dataset_id("vlfeedback", "a" * 200) == "vlfeedback-" + "a" * 117
    assert dataset_id("rlhfv", None) is None and dataset_id("rlhfv", " ") is None


def test_detection_rules():
    assert detect_format({"id": "1", "prompt": "p", "completions": [], "img_path": "x"}) == "vlfeedback"
    assert detect_format({"image": {"bytes": b""}, "text": "{}", "idx": 1}) == "rlhfv"
    assert detect_format({"prompt": "p", "chosen": "c", "rejected": "r", "images": []}) == "trl"
    assert detect_format({"image": {"bytes": b"", "path": None}, "question": "q", "chosen": "c"}) == "rlaifv"
    assert detect_format({"image": "x.png", "question": "q", "chosen": "c", "ds_name": "x"}) == "rlaifv"
    assert detect_format({"image": "x.png", "question": "q", "chosen": "c", "rejected": "r"}) == "native"


# --- VLFeedback as Hugging Face datasets hands it ---------------------------------------------

ASPECTS = ("Helpfulness", "Visual Faithfulness", "Ethical Considerations")


def vlfeedback_features():
    """The features of the VLFeedback card (``dataset_info``): ``completions`` is a *sequence* of structs,
    which ``datasets`` turns into a dict of lists (``Sequence`` of a dict, TFDS style)."""
    import datasets

    note = {"Rating": datasets.Value("string"), "Rationale": datasets.Value("string")}
    return datasets.Features({
        "id": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "models": datasets.Sequence(datasets.Value("string")),
        "completions": datasets.Sequence({
            "annotations": {aspect: note for aspect in ASPECTS},
            "model": datasets.Value("string"),
            "response": datasets.Value("string"),
        }),
        "img_path": datasets.Value("string"),
    })


def vlfeedback_hf_dataset():
    """Two rows in the card's layout: the pair of the first is (m1, m2) as in test_vlfeedback_pair_rule."""
    import datasets

    def column(completions: list[dict]) -> dict:
        return {key: [c[key] for c in completions] for key in ("annotations", "model", "response")}

    rows = [
        ("svit-1", "Describe the scene.", "imgs/1.jpg", [
            completion("m0", "resp0", "4", "3", "5"), completion("m1", "resp1", "3", "4", "5"),
            completion("m2", "resp2", "2", "1", "N/A"), completion("m3", "resp3", "3", "3", "3")]),
        ("lrv-7", "What is red?", "imgs/7.jpg", [
            completion("a", "A red cup.", "5", "5", "5"), completion("b", "A red car.", "2", "1", "5")]),
    ]
    data = {
        "id": [r[0] for r in rows], "prompt": [r[1] for r in rows], "img_path": [r[2] for r in rows],
        "models": [[c["model"] for c in r[3]] for r in rows], "completions": [column(r[3]) for r in rows],
    }
    return datasets.Dataset.from_dict(data, features=vlfeedback_features())


def test_vlfeedback_rows_as_datasets_hands_them_parquet_to_json_and_json_dumps(tmp_path):
    ds = vlfeedback_hf_dataset()
    assert set(ds[0]["completions"]) == {"annotations", "model", "response"}  # a dict of lists, not a list
    parquet = tmp_path / "vlf.parquet"
    ds.to_parquet(str(parquet))
    assert pa.types.is_struct(pq.read_schema(parquet).field("completions").type)  # a struct of lists in Parquet
    to_json = tmp_path / "vlf.jsonl"
    ds.to_json(str(to_json))
    dumped = write_jsonl(tmp_path / "dumped.jsonl", [json.dumps(row) for row in ds])
    for path in (parquet, to_json, dumped):
        first, second = read_all(path)  # detected as vlfeedback
        assert isinstance(first, ReadItem) and isinstance(second, ReadItem), (path, first, second)
        assert (first.item.id, first.item.question) == ("vlfeedback-svit-1", "Describe the scene.")
        assert (first.item.chosen, first.item.rejected) == ("resp1", "resp2")
        assert first.item.image == str((tmp_path / "imgs" / "1.jpg").resolve())
        assert first.item.source == {"id": "svit-1", "chosen_model": "m1", "rejected_model": "m2"}
        assert (second.item.chosen, second.item.rejected) == ("A red cup.", "A red car.")


def test_vlfeedback_dict_of_lists_that_does_not_line_up_fails_with_the_reason(tmp_path):
    good = completion("a", "x", "5", "5", "5")
    rows = [
        {"id": "ragged", "prompt": "p", "img_path": "i.jpg",
         "completions": {"annotations": [good["annotations"]] * 2, "model": ["a", "b"], "response": ["x"]}},
        {"id": "scalar", "prompt": "p", "img_path": "i.jpg", "completions": {"response": "x"}},
        {"id": "nulls", "prompt": "p", "img_path": "i.jpg",
         "completions": {"annotations": None, "model": ["a", "b"], "response": ["x", "y"]}},
        {"id": "text", "prompt": "p", "img_path": "i.jpg", "completions": "x"},
    ]
    ragged, scalar, nulls, text = read_all(write_jsonl(tmp_path / "vlf.jsonl", rows))
    assert isinstance(ragged, Failure) and ragged.reason == (
        "completions: the lists of a dict of lists differ in length (annotations: 2, model: 2, response: 1)")
    assert isinstance(scalar, Failure) and "needs a list under 'response', got str" in scalar.reason
    assert isinstance(nulls, Failure) and "0 of 2 completions have a response and a numeric rating" in nulls.reason
    assert isinstance(text, Failure) and text.reason.startswith(
        "completions: expected a list of rated completions or a dict of lists")


# --- system prompts and provenance ----------------------------------------------------------


def test_trl_system_turn_is_kept_as_the_items_system(tmp_path):
    img = png(1)
    two_systems = conversational("Q?", "a", "b")
    two_systems["prompt"] = [*two_systems["prompt"][:1],
                             {"role": "system", "content": [{"type": "text", "text": "Answer in English."}]},
                             *two_systems["prompt"][1:]]
    rows = [
        {**conversational("What animal?", "A cat.", "A dog."), "images": [{"bytes": img, "path": None}]},
        {**two_systems, "images": [{"bytes": img, "path": None}]},
        {**{k: v for k, v in conversational("", "a", "b").items() if k != "prompt"},
         "prompt": [{"role": "user", "content": [{"type": "text", "text": "No system here?"}]}],
         "images": [{"bytes": img, "path": None}]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "trl.parquet")
    with_system, with_two, without = read_all(tmp_path / "trl.parquet")
    assert isinstance(with_system, ReadItem) and with_system.item.system == "Be brief."
    assert with_system.item.question == "What animal?"
    assert isinstance(with_two, ReadItem) and with_two.item.system == "Be brief.\nAnswer in English."
    assert isinstance(without, ReadItem) and without.item.system is None


def test_rlaifv_and_rlhfv_provenance_becomes_the_items_source(tmp_path):
    img = png(2)
    rlaifv = [{"ds_name": "RLAIF-V", "image": {"bytes": img, "path": None}, "question": "q", "chosen": "c",
               "rejected": "r", "origin_dataset": "OK-VQA", "origin_split": '{"model": "x"}', "idx": "17",
               "image_path": "okvqa/17.jpg"}]
    pq.write_table(rlaifv_table(rlaifv), tmp_path / "rlaifv.parquet")
    (entry,) = read_all(tmp_path / "rlaifv.parquet")
    assert isinstance(entry, ReadItem)
    assert entry.item.source == {"ds_name": "RLAIF-V", "origin_dataset": "OK-VQA", "origin_split": '{"model": "x"}',
                                 "idx": "17", "image_path": "okvqa/17.jpg"}
    rlhfv = [{"ds_name": "RLHF-V", "image": {"bytes": img, "path": None}, "idx": 5,
              "text": json.dumps({"question": "q", "chosen": "c", "rejected": "r"})}]
    pq.write_table(pa.Table.from_pylist(rlhfv), tmp_path / "rlhfv.parquet")
    (entry,) = read_all(tmp_path / "rlhfv.parquet")
    assert isinstance(entry, ReadItem) and entry.item.source == {"ds_name": "RLHF-V", "idx": "5"}
