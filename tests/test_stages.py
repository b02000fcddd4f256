"""The stage graph and its runner: declared inputs, order of writes, idempotency, failure and time rules."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.images import inline_synth_items

from mfpo.images import load_image_bytes
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.resources import build_resources
from mfpo.regions.base import Region, RegionResult
from mfpo.schemas import Failure, KeywordScore, PreferenceItem
from mfpo.stages import GRAPH, STAGES, Chunk, MissingInput, StoreChunkIO, describe_item, run_stage
from mfpo.stages.artifacts import (
    StageOutput,
    decode_keywords,
    decode_outcomes,
    decode_regions,
    encode_keywords,
    encode_regions,
)
from mfpo.stages.blob import pack_images
from mfpo.stages.runner import give_up, guarded, item_deadline
from mfpo.storage.local import LocalStore
from mfpo.synth import SynthConfig

CONFIG = GenerateConfig.model_validate({"regions": {"mode": "annotations"}})


class RecordingStore(LocalStore):
    """A local store that records the order of its writes (and can fail one key pattern)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: list[str] = []
        self.lock = threading.Lock()
        self.fail_on: str | None = None

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if self.fail_on and self.fail_on in key:
            raise OSError(f"disk full writing {key}")
        with self.lock:
            self.puts.append(key)
        super().put(key, data, content_type)


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[dict]:
    return inline_synth_items(tmp_path_factory.mktemp("scenes"), SynthConfig(n=6, seed=41, width=96, height=80))


def stored_chunk(store: RecordingStore, items: list[dict], root: str = "job") -> StoreChunkIO:
    staged, blobs = [], []
    for n, raw in enumerate(items):
        data = load_image_bytes(raw["image"], None, CONFIG.limits)
        item, _ = describe_item(n, n, PreferenceItem.model_validate(raw), data, CONFIG)
        staged.append(item)
        blobs.append((item.id, data))
    io = StoreChunkIO(store, root, "00000000-test", LocalStore(store.root / "out"), CONFIG.limits)
    io.write("images", pack_images(blobs))
    io.write("items", Chunk(key="00000000-test", items=staged).model_dump_json().encode())
    store.puts.clear()
    return io


def test_the_outcomes_are_written_last(tmp_path, items):
    """The crash-consistency rule: a chunk's outcomes (its records) come after every file they name."""
    store = RecordingStore(tmp_path)
    io = stored_chunk(store, items)
    out = io.outputs
    out_puts: list[str] = []
    original_put = out.put

    def put(key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with store.lock:
            store.puts.append(f"out/{key}")
            out_puts.append(key)
        original_put(key, data, content_type)

    out.put = put  # type: ignore[method-assign]
    resources = build_resources(CONFIG.regions)
    for stage in GRAPH:
        run_stage(stage, io, CONFIG, resources)
    assert store.puts[-1].endswith("/outcomes/00000000-test.jsonl")
    assert len(out_puts) == 3 * len(items) and all(p.startswith("out/") for p in store.puts[-1 - len(out_puts):-1])
    records = [o.record for o in decode_outcomes(store.get("job/outcomes/00000000-test.jsonl"))]
    for record in records:
        assert record is not None
        assert {record.image, record.rejected_image, record.mask} <= set(out_puts)


def test_a_failed_file_write_leaves_no_outcomes_and_a_rerun_finishes(tmp_path, items):
    store = RecordingStore(tmp_path)
    io = stored_chunk(store, items)
    io.outputs = RecordingStore(tmp_path / "out2")
    io.outputs.fail_on = "rejected/"  # type: ignore[attr-defined]
    resources = build_resources(CONFIG.regions)
    for stage in GRAPH[:-1]:
        run_stage(stage, io, CONFIG, resources)
    with pytest.raises(OSError, match="disk full"):
        run_stage(STAGES["perturb"], io, CONFIG, resources)
    assert not store.exists("job/outcomes/00000000-test.jsonl")
    io.outputs.fail_on = None  # type: ignore[attr-defined]
    assert run_stage(STAGES["perturb"], io, CONFIG, resources).executed
    assert not run_stage(STAGES["perturb"], io, CONFIG, resources).executed  # done: skipped


def test_a_stage_reads_only_what_it_declares(tmp_path, items):
    store = RecordingStore(tmp_path)
    io = stored_chunk(store, items)
    resources = build_resources(CONFIG.regions)
    with pytest.raises(MissingInput, match="keywords"):
        run_stage(STAGES["regions"], io, CONFIG, resources)
    from mfpo.stages.runner import StageContext

    ctx = StageContext(STAGES["keywords"], io, CONFIG, resources)
    with pytest.raises(ValueError, match="does not declare input 'regions'"):
        ctx.read("regions")


def test_artifacts_round_trip():
    fail = Failure(row=3, id="b", stage="keywords", reason="no nouns")
    kws = StageOutput(results={"a": [KeywordScore(text="red cup", score=0.5)]}, failures={"b": fail})
    back = decode_keywords(encode_keywords(kws))
    assert back.results == kws.results and back.failures == kws.failures
    mask = np.zeros((5, 13), dtype=bool)
    mask[1:3, 2:11] = True
    regions = StageOutput(results={"a": RegionResult([Region(mask, "annotations", "red cup"),
                                                      Region(~mask, "global", None)], fallback=False),
                                   "c": RegionResult([], fallback=True)}, failures={"b": fail})
    back_r = decode_regions(encode_regions(regions))
    assert back_r.failures == {"b": fail} and back_r.results["c"].fallback and not back_r.results["c"].regions
    [r1, r2] = back_r.results["a"].regions
    assert np.array_equal(r1.mask, mask) and np.array_equal(r2.mask, ~mask)
    assert (r1.source, r1.keyword, r2.source, r2.keyword) == ("annotations", "red cup", "global", None)


def test_an_item_over_its_time_limit_fails_alone():
    failures: dict[str, Failure] = {}
    item = type("Item", (), {"id": "slow", "row": 4})()
    started = time.perf_counter()
    assert guarded("keywords", item, failures, time.sleep, 5.0, limit_s=0.2) is None  # type: ignore[arg-type]
    assert time.perf_counter() - started < 2.0
    assert failures["slow"].reason == "keywords took longer than 0.2 s (item_time_limit_s)"
    assert guarded("keywords", item, failures, lambda: 7, limit_s=0.2) == 7  # type: ignore[arg-type]
    with item_deadline(None):
        time.sleep(0.01)


def test_giving_up_fails_every_item_with_the_reason_and_keeps_earlier_failures(tmp_path, items):
    store = RecordingStore(tmp_path)
    io = stored_chunk(store, items[:3])
    first = io.chunk().items[0]
    early = Failure(row=0, id=first.id, stage="keywords", reason="no nouns")
    io.write("keywords", encode_keywords(StageOutput(failures={first.id: early})))
    outcomes = give_up(io, STAGES["regions"], "regions stopped 3 times")
    assert [o.status for o in outcomes] == ["failed"] * 3
    assert outcomes[0].failure == early and outcomes[1].failure.reason == "regions stopped 3 times"  # type: ignore[union-attr]
    assert io.exists("outcomes")
