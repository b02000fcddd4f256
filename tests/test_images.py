"""Image loading and validation: every refusal is an ImageError with a readable reason."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfpo.config import UnknownOptionError
from mfpo.images import ImageError, ImageLimits, decode_image, encode_png, load_image_bytes, to_data_uri
from mfpo.storage.local import LocalStore

LIMITS = ImageLimits()


def noisy_png(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` but that carries no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --- decode_image ------------------------------------------------------------------------


def test_decode_round_trips_pixels_exactly():
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    image = decode_image(encode_png(arr), LIMITS)
    assert image.mode == "RGB" and image.size == (9, 7)
    assert np.array_equal(np.asarray(image), arr)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_decode_converts_other_modes_to_rgb(mode):
    buf = io.BytesIO()
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    Image.new(mode, (5, 4)).save(buf, format=fmt)
    image = decode_image(buf.getvalue(), LIMITS)
    assert image.mode == "RGB" and image.size == (5, 4)


def test_truncated_png_is_refused():
    data = noisy_png()
    with pytest.raises(ImageError, match=r"corrupt or truncated PNG"):
        decode_image(data[: len(data) // 2], LIMITS)


def test_non_image_bytes_are_refused():
    with pytest.raises(ImageError, match=r"not an image: unrecognised bytes starting with b'hello wo'"):
        decode_image(b"hello world, not a picture", LIMITS)
    with pytest.raises(ImageError, match="0 bytes"):
        decode_image(b"", LIMITS)


def test_over_max_pixels_is_refused_with_the_numbers():
    data = noisy_png(400, 400)
    with pytest.raises(ImageError) as err:
        decode_image(data, ImageLimits(max_pixels=100_000))
    assert str(err.value) == "image is 400x400 = 160000 pixels, over max_pixels=100000"
    assert decode_image(data, ImageLimits(max_pixels=160_000)).size == (400, 400)


def test_decompression_bomb_is_refused_from_the_header():
    bomb = png_header_only(10_000, 10_000)  # 10^8 pixels claimed in 57 bytes
    assert len(bomb) < 100
    with pytest.raises(ImageError) as err:
        decode_image(bomb, LIMITS)
    assert str(err.value) == "image is 10000x10000 = 100000000 pixels, over max_pixels=40000000"
    # past PIL's own hard limit (2 x Image.MAX_IMAGE_PIXELS) PIL refuses while reading the header
    with pytest.raises(ImageError, match=r"decompression bomb \(max_pixels=40000000\).*10000000000 pixels"):
        decode_image(png_header_only(100_000, 100_000), LIMITS)


def test_header_within_limits_but_no_pixel_data_is_refused():
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(png_header_only(20, 10), LIMITS)


def test_over_max_bytes_is_refused_before_decoding():
    data = noisy_png()
    with pytest.raises(ImageError, match=rf"image is {len(data)} bytes, over max_bytes=100"):
        decode_image(data, ImageLimits(max_bytes=100))


# --- encode_png / to_data_uri --------------------------------------------------------------


def test_encode_png_is_deterministic_and_grey_or_rgb():
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert encode_png(arr) == encode_png(arr.copy())
    grey = Image.open(io.BytesIO(encode_png(arr)))
    assert grey.mode == "L" and np.array_equal(np.asarray(grey), arr)
    assert b"tIME" not in encode_png(arr)


@pytest.mark.parametrize(
    ("arr", "message"),
    [
        (np.zeros((3, 4), np.float32), "uint8"),
        (np.zeros((3, 4, 4), np.uint8), r"\(H, W\) or \(H, W, 3\)"),
        (np.zeros((0, 4), np.uint8), "non-empty"),
    ],
)
def test_encode_png_rejects_bad_arrays(arr, message):
    with pytest.raises(ValueError, match=message):
        encode_png(arr)


# --- load_image_bytes ----------------------------------------------------------------------


def test_data_uri_round_trip_and_errors():
    data = noisy_png(8, 8)
    uri = to_data_uri(data)
    assert uri.startswith("data:image/png;base64,")
    assert load_image_bytes(uri, None, LIMITS) == data
    assert load_image_bytes("data:image/png;name=a.png;base64," + uri.split(",", 1)[1], None, LIMITS) == data
    with pytest.raises(ImageError, match="not valid base64"):
        load_image_bytes("data:image/png;base64,@@@@", None, LIMITS)
    with pytest.raises(ImageError, match="unsupported data URI"):
        load_image_bytes("data:text/plain;base64,aGVsbG8=", None, LIMITS)
    with pytest.raises(ImageError, match="over max_bytes=10"):
        load_image_bytes(uri, None, ImageLimits(max_bytes=10))


def test_relative_path_is_resolved_against_base_dir(tmp_path):
    data = noisy_png()
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(data)
    assert load_image_bytes("imgs/a.png", tmp_path, LIMITS) == data
    assert load_image_bytes(str(tmp_path / "imgs" / "a.png"), None, LIMITS) == data
    assert load_image_bytes((tmp_path / "imgs" / "a.png").as_uri(), None, LIMITS) == data


def test_missing_file_directory_and_size_limit(tmp_path):
    with pytest.raises(ImageError, match=r"image file not found: .*missing\.png"):
        load_image_bytes("missing.png", tmp_path, LIMITS)
    with pytest.raises(ImageError, match="not a file"):
        load_image_bytes(".", tmp_path, LIMITS)
    (tmp_path / "big.png").write_bytes(b"x" * 1000)
    with pytest.raises(ImageError, match=r"is 1000 bytes, over max_bytes=999"):
        load_image_bytes("big.png", tmp_path, ImageLimits(max_bytes=999))
    with pytest.raises(ImageError, match="empty"):
        load_image_bytes("  ", tmp_path, LIMITS)
    with pytest.raises(ImageError, match="unsupported image reference scheme 'ftp'"):
        load_image_bytes("ftp://host/a.png", tmp_path, LIMITS)


def test_store_reference_reads_through_the_store(tmp_path):
    store = LocalStore(tmp_path / "store")
    data = noisy_png()
    store.put("items/ab/cd.png", data)
    assert load_image_bytes("store://items/ab/cd.png", None, LIMITS, store=store) == data
    with pytest.raises(ImageError, match=r"cannot read image store://items/none\.png: no object"):
        load_image_bytes("store://items/none.png", None, LIMITS, store=store)
    with pytest.raises(ImageError, match="not allowed"):
        load_image_bytes("store://../escape.png", None, LIMITS, store=store)
    with pytest.raises(ImageError, match="needs an object store"):
        load_image_bytes("store://items/ab/cd.png", None, LIMITS)


@pytest.fixture
def http_root(tmp_path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on localhost serving ``tmp_path``."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=tmp_path))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_http_url_fetch_status_and_byte_cap(http_root):
    base, root = http_root
    data = noisy_png()
    (root / "a.png").write_bytes(data)
    assert load_image_bytes(f"{base}/a.png", None, LIMITS) == data
    with pytest.raises(ImageError, match="HTTP 404"):
        load_image_bytes(f"{base}/missing.png", None, LIMITS)
    with pytest.raises(ImageError, match=rf"is {len(data)} bytes, over max_bytes=50"):
        load_image_bytes(f"{base}/a.png", None, ImageLimits(max_bytes=50))


def test_unreachable_url_is_an_image_error():
    with pytest.raises(ImageError, match=r"cannot fetch image http://127\.0\.0\.1:9/"):
        load_image_bytes("http://127.0.0.1:9/a.png", None, ImageLimits(url_timeout_s=2))


def test_limits_are_a_strict_config():
    assert ImageLimits().max_pixels == 40_000_000 and ImageLimits().max_bytes == 50 * 1024 * 1024
    assert "decompression" in ImageLimits.help()["max_pixels"]
    with pytest.raises(UnknownOptionError, match="max_pixel"):
        ImageLimits.model_validate({"max_pixel": 5})
    with pytest.raises(ValueError):
        ImageLimits(max_pixels=0)


def test_base64_helper_matches_stdlib():
    expected = "data:image/jpeg;base64," + base64.b64encode(b"\x00\x01").decode()
    assert to_data_uri(b"\x00\x01", "image/jpeg") == expected
