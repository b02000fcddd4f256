"""Peak memory of one big item through every stage (run in its own process by tests/test_item_memory.py).

    python tests/scripts/item_peak_memory.py IMAGE.png OUT_DIR MAX_WORKING_PIXELS

Prints one JSON line: the rise of the process's peak RSS (MB) over its warmed-up baseline after the
item is described (decoded) and after each stage, and the record's source_size. The image is made by the
caller: this process never holds it decoded before the baseline is taken.

The peak is the kernel's high-water mark (``VmHWM``), reset to the current RSS once the imports and models are
warm (``/proc/self/clear_refs``): the peaks of importing torch and the models (which can be higher than the
item's) do not hide the item's own rise.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

from PIL import Image

from mfpo.perturbation import alpha_bar
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.embedded import outcomes_key
from mfpo.pipeline.resources import build_resources
from mfpo.schemas import PreferenceItem
from mfpo.stages import GRAPH, Chunk, MemoryChunkIO, describe_item, run_stage
from mfpo.stages.artifacts import decode_outcomes
from mfpo.storage.local import LocalStore


def peak_mb() -> float:
    """The process's peak RSS since the last :func:`reset_peak` (MB)."""
    match = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    assert match is not None, "no VmHWM in /proc/self/status"
    return int(match.group(1)) / 1024


def reset_peak() -> float:
    """Reset the high-water mark to the current RSS (Linux >= 4.0) and return it (MB)."""
    Path("/proc/self/clear_refs").write_text("5")
    return peak_mb()


def main() -> None:
    path, out, working = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(path, "rb") as fh:
        data = fh.read()
    with Image.open(io.BytesIO(data)) as header:
        size = header.size[0]
    config = GenerateConfig.model_validate({"regions": {"mode": "annotations"},
                                            "limits": {"max_pixels": 40_000_000, "max_working_pixels": working}})
    resources = build_resources(config.regions)
    alpha_bar(config.perturbation)
    base = reset_peak()
    item = PreferenceItem(id="big", image="x", question="What is there?", chosen="A blue cup on a table.",
                          rejected="A red car.",
                          annotations=[{"label": "cup", "box": [size * 0.1, size * 0.1, size * 0.6, size * 0.6]}])
    staged, decoded = describe_item(0, 0, item, data, config)
    rise = {"describe": peak_mb() - base}
    store = LocalStore(out)
    io_ = MemoryChunkIO(Chunk(key="big", items=[staged]), {"big": data}, {"big": decoded}, store, outcomes_key,
                        config.limits)
    del decoded
    for stage in GRAPH:
        run_stage(stage, io_, config, resources)
        rise[stage.name] = peak_mb() - base
    [outcome] = decode_outcomes(store.get(outcomes_key("big")))
    assert outcome.record is not None, outcome
    with Image.open(store.path(outcome.record.rejected_image)) as rejected:
        size_out = rejected.size
    print(json.dumps({"rise_mb": rise, "source_size": outcome.record.source_size, "rejected_size": size_out}))


if __name__ == "__main__":
    main()
