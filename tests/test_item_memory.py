"""One item's memory is bounded by settings, not by the image: a 36-megapixel image through every stage.

Before, such an image (within the default ``max_pixels``) took 4.6 GB of worker memory: the noise and
its intermediates were float arrays of the full image. Now the noise is banded, and the stages work on
the image reduced to ``limits.max_working_pixels``; only the decode of the submitted image scales with its
size (bounded by ``limits.max_pixels``). Each case runs in its own process (peak RSS is per process).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

SCRIPT = Path(__file__).parent / "scripts" / "item_peak_memory.py"


def _run(image: Path, working: int, out: Path) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(image), str(out), str(working)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_36_megapixel_item_stays_within_its_memory_bound(tmp_path):
    image = tmp_path / "big.png"
    Image.new("RGB", (6000, 6000), (40, 120, 200)).save(image, "PNG", compress_level=1)
    default = _run(image, 16_777_216, tmp_path / "a")
    assert default["source_size"] == [6000, 6000] and default["rejected_size"] == [4096, 4096]
    assert max(default["rise_mb"].values()) < 600, default  # 4.6 GB before
    small = _run(image, 4_000_000, tmp_path / "b")
    assert small["rejected_size"] == [2000, 2000]
    # the stages' share follows the setting: processing at 4 MP costs far less than at 16.7 MP
    stages = [k for k in default["rise_mb"] if k != "describe"]
    assert max(small["rise_mb"][k] for k in stages) < max(default["rise_mb"][k] for k in stages) - 80, (small,
                                                                                                          default)
