"""Image loading and validation shared by readers, pipeline, exporters and services.

Every input image goes through two steps:

1. :func:`load_image_bytes` turns a reference (file path, ``http(s)://`` URL,
   ``data:image/...;base64,`` URI, ``file://`` URI or ``store://KEY``) into bytes,
   refusing anything over ``max_bytes`` before it is read in full.
2. :func:`decode_image` turns bytes into an RGB ``PIL.Image``, refusing images over
   ``max_pixels`` from their header alone (before any pixel is decoded), and
   truncated, corrupt or non-image bytes.

Every refusal raises :class:`ImageError` (a ``ValueError``) whose message says what
was wrong, for a person to read.

Pixels are decoded in stored order: EXIF orientation is *not* applied, so masks and
rejected images line up with what PIL-based trainers (``datasets.Image``) see.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import struct
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import Field

from mfpo.config import ComponentConfig
from mfpo.storage.base import ObjectStore, StoreError

STORE_SCHEME = "store://"
_DATA_URI = re.compile(r"^data:(?P<mime>image/[A-Za-z0-9.+-]+)(?P<params>(;[^;,]*)*?);base64,", re.IGNORECASE)
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):")


class ImageError(ValueError):
    """An image reference or image bytes that cannot be used, with the reason."""


class ImageLimits(ComponentConfig):
    """Limits that protect workers from oversized or slow inputs."""

    max_pixels: int = Field(
        default=40_000_000,
        gt=0,
        description="Largest width*height accepted; checked from the image header before decoding "
        "(a guard against decompression bombs).",
    )
    max_bytes: int = Field(
        default=50 * 1024 * 1024,
        gt=0,
        description="Largest encoded image accepted, in bytes (files, URLs, data URIs, store objects).",
    )
    url_timeout_s: float = Field(
        default=20.0, gt=0, description="Timeout in seconds for fetching an http(s) image URL."
    )
    max_working_pixels: int = Field(
        default=16_777_216,
        gt=0,
        description="Largest image the stages work on (4096^2 by default): a bigger one is decoded reduced to fit "
        "(JPEG decoded at a reduced scale, others box-filtered), aspect kept, so one item's memory is bounded by "
        "this setting (about 16 bytes per working pixel at the peak), not by the input. Such an item's dataset "
        "image is the reduced image (PNG) and its record says source_size. LLaVA-class models see 336-1344 px.",
    )


def working_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) reduced to at most ``max_pixels`` pixels, aspect kept (unchanged when it fits)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


# --- references -> bytes -------------------------------------------------------------


def load_image_bytes(
    ref: str,
    base_dir: Path | None,
    limits: ImageLimits,
    store: ObjectStore | None = None,
) -> bytes:
    """The encoded bytes an image reference points to (not decoded; see :func:`decode_image`).

    ``ref`` is one of: ``data:image/<type>;base64,<payload>``, ``http://`` / ``https://``
    URL, ``store://KEY`` (read from ``store``), ``file://`` URI, or a filesystem path
    (relative paths are taken relative to ``base_dir``, or the working directory when
    ``base_dir`` is None). Raises :class:`ImageError` for a missing or unreadable
    source and for anything over ``limits.max_bytes``.
    """
    if not ref or not ref.strip():
        raise ImageError("image reference is empty")
    lowered = ref[:16].lower()
    if lowered.startswith("data:"):
        return _load_data_uri(ref, limits)
    if lowered.startswith(("http://", "https://")):
        return _load_url(ref, limits)
    if lowered.startswith(STORE_SCHEME):
        return _load_store(ref[len(STORE_SCHEME) :], store, limits)
    if lowered.startswith("file://"):
        parsed = urllib.parse.urlparse(ref)
        return _load_path(Path(urllib.request.url2pathname(parsed.path)), limits)
    scheme = _SCHEME.match(ref)
    if scheme and len(scheme.group("scheme")) > 1:  # one letter: a Windows drive, a path
        raise ImageError(
            f"unsupported image reference scheme {scheme.group('scheme')!r} in {_short(ref)}: use a path, "
            "http(s):// URL, data:image/...;base64 URI, file:// URI or store://KEY"
        )
    path = Path(ref)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return _load_path(path, limits)


def _load_path(path: Path, limits: ImageLimits) -> bytes:
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    if not path.is_file():
        raise ImageError(f"image path is not a file: {path}")
    size = path.stat().st_size
    _check_size(size, limits, f"image file {path}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image file {path}: {exc}") from exc


def _load_data_uri(ref: str, limits: ImageLimits) -> bytes:
    match = _DATA_URI.match(ref)
    if match is None:
        raise ImageError(
            f"unsupported data URI {_short(ref)}: expected 'data:image/<type>;base64,<payload>'"
        )
    payload = ref[match.end() :]
    _check_size(len(payload) * 3 // 4, limits, "data URI image")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"data URI is not valid base64: {exc}") from exc


def _load_url(url: str, limits: ImageLimits) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "mfpo-image-loader"})
    try:
        with urllib.request.urlopen(request, timeout=limits.url_timeout_s) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit():
                _check_size(int(length), limits, f"image at {url}")
            data = response.read(limits.max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise ImageError(f"cannot fetch image {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageError(f"cannot fetch image {url}: {reason}") from exc
    if len(data) > limits.max_bytes:
        raise ImageError(f"image at {url} is over max_bytes={limits.max_bytes}")
    return data


def _load_store(key: str, store: ObjectStore | None, limits: ImageLimits) -> bytes:
    if store is None:
        raise ImageError(f"image store://{key} needs an object store, and none was given")
    try:
        data = store.get(key)
    except (StoreError, KeyError) as exc:
        raise ImageError(f"cannot read image store://{key}: {exc}") from exc
    _check_size(len(data), limits, f"image store://{key}")
    return data


def _check_size(size: int, limits: ImageLimits, what: str) -> None:
    if size > limits.max_bytes:
        raise ImageError(f"{what} is {size} bytes, over max_bytes={limits.max_bytes}")


def _short(ref: str, keep: int = 64) -> str:
    return repr(ref) if len(ref) <= keep else repr(ref[:keep]) + f"...<{len(ref)} chars>"


# --- bytes -> pixels -------------------------------------------------------------------


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    """``Image.open`` (header only) with the byte, pixel-count and format checks of :func:`decode_image`."""
    if len(data) > limits.max_bytes:
        raise ImageError(f"image is {len(data)} bytes, over max_bytes={limits.max_bytes}")
    if not data:
        raise ImageError("image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # our own max_pixels check below is the limit; PIL's softer warning is noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # PIL's own hard limit, hit while reading the header
        raise ImageError(
            f"image refused as a decompression bomb (max_pixels={limits.max_pixels}): {exc}"
        ) from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(f"not an image: unrecognised bytes starting with {data[:8]!r}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt image header: {exc}") from exc
    width, height = image.size
    pixels = width * height
    if pixels > limits.max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {pixels} pixels, over max_pixels={limits.max_pixels}"
        )
    if pixels == 0:
        raise ImageError(f"image is {width}x{height}: it has no pixels")
    return image


def image_header(data: bytes, limits: ImageLimits) -> tuple[int, int, str]:
    """(width, height, file extension) from the header alone, with every check that needs no pixels.

    Raises :class:`ImageError` as :func:`decode_image` does for sizes, empty or non-image bytes.
    """
    image = _open(data, limits)
    return image.size[0], image.size[1], _FORMAT_EXT.get((image.format or "PNG").upper(), ".png")


def verify_image(data: bytes, limits: ImageLimits) -> tuple[int, int, str]:
    """Check image bytes without a full decode: the header checks of :func:`image_header`, then the file's
    integrity - PNG: every chunk's CRC and the end marker (``Image.verify``, no decompression); JPEG: a decode
    at 1/8 scale (reads every entropy-coded segment, ~1/10 of the work); other formats: a full decode.

    Returns (width, height, extension). Cheap enough for the intake of every submitted image; bytes that
    pass and still fail the full decode later fail their item with the reason.
    """
    width, height, ext = image_header(data, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format == "PNG":
                image.verify()
            elif image.format == "JPEG":
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                image.load()
            else:
                decode_image(data, limits)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageError(f"corrupt or truncated {ext.lstrip('.').upper()} file: {exc}") from exc
    return width, height, ext


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode encoded image bytes into a fully loaded RGB ``PIL.Image``.

    The pixel count is read from the header (``Image.open`` parses only the header)
    and refused when over ``limits.max_pixels``, before the pixels are decoded.
    Truncated or corrupt files and bytes that are not an image raise
    :class:`ImageError`. Multi-frame images (GIF, TIFF) give their first frame. An image over
    ``limits.max_working_pixels`` comes back reduced to :func:`working_size`.
    """
    image = _open(data, limits)
    target = working_size(image.size[0], image.size[1], limits.max_working_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if target != image.size:
                image.draft("RGB", target)  # JPEG: decode at 1/2..1/8 scale, never the full image in memory
            image.load()
            if image.size != target:  # reduce first: the RGB conversion then copies the small image only
                if image.mode not in ("RGB", "L"):  # palette, 16-bit, alpha: filter in RGB, not nearest
                    image = image.convert("RGB")
                image = image.resize(target, Image.Resampling.BOX)
            rgb = image if image.mode == "RGB" else image.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image refused as a decompression bomb: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"corrupt or truncated {image.format or 'image'} file: {exc}") from exc
    return rgb


# --- pixels -> bytes -------------------------------------------------------------------


def encode_png(array: npt.NDArray[np.uint8], compress_level: int = 6) -> bytes:
    """Encode a uint8 image, ``(H, W)`` grey or ``(H, W, 3)`` RGB, as PNG bytes.

    Deterministic: the same array gives the same bytes (PIL writes no time or text
    chunks unless asked to).
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png needs a uint8 array, got {arr.dtype}")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"encode_png needs shape (H, W) or (H, W, 3), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"encode_png needs a non-empty image, got shape {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


_FORMAT_EXT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
_EXT_TYPE = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
             ".bmp": "image/bmp", ".tif": "image/tiff"}


def image_extension(data: bytes) -> str:
    """File extension of encoded image bytes (``.png``, ``.jpg``, ...), from the header alone."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return _FORMAT_EXT.get((im.format or "PNG").upper(), ".png")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"not an image: {exc}") from exc


def content_type(ext: str) -> str:
    """MIME type of an image file extension (``image/png`` when unknown)."""
    return _EXT_TYPE.get(ext.lower(), "image/png")


def to_data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,<payload>`` for encoded image bytes."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
