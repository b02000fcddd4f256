"""Images and items as clients send them: PNG bytes, data: URIs, synthetic items with inline images."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

from PIL import Image

from mfpo.synth import SynthConfig, generate_scenes


def png(width: int, height: int, color: tuple[int, int, int] = (9, 9, 9)) -> bytes:
    """A solid-colour PNG of width x height."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small real PNG whose IHDR is rewritten (CRC fixed) to claim width x height: a decompression bomb's
    signature."""
    data = bytearray(png(8, 8))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def inline_synth_items(folder: Path, config: SynthConfig) -> list[dict]:
    """Synthetic items (mfpo.synth) with their images inline as data: URIs, as the gateway takes them."""
    path = generate_scenes(config, folder)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row["image"] = data_uri((path.parent / row["image"]).read_bytes())
    return rows
