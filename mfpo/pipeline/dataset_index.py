"""The gallery's filters as views of a written dataset, and the small index that pages them.

A *view* is the list of dataset lines one gallery filter shows, in dataset order:

==========================  =============================================================
view                        lines
==========================  =============================================================
``all``                     every record (``dataset.jsonl``)
``failed``                  every failed row (``failures.jsonl``)
``fallback``                records whose whole image was noised (no region found)
``keywords-not-found``      records with a keyword no provider located
``source-{name}``           records with a region from provider ``name`` (annotations, ...)
``area-{bucket}``           records whose mask area (:func:`mask_area`) falls in the bucket
==========================  =============================================================

A record is in every view it qualifies for (a record with annotation and grounded regions is in
both ``source-`` views); filters do not combine (no intersections are stored).

:class:`ViewIndexWriter` streams the views while :class:`~mfpo.pipeline.dataset.DatasetWriter`
writes the dataset, one temporary file per view, and concatenates them into ``gallery-index.bin``:
the entries of each view one after the other, each entry :data:`ENTRY` (byte offset u64, byte
length u32, little-endian) of one line. :class:`ViewIndex` (in ``stats.json``) says where a view's
entries start. Page ``p`` of ``n`` entries of a view is one range read of ``12 n`` bytes of the
index, then the lines themselves in a few range reads (:func:`read_view`): a server pages a filter
of a 100k-record dataset without reading the dataset. The index costs 12 bytes per record per view
it is in (about 5 views a record: ~6 MB for 100k records).
"""

from __future__ import annotations

import math
import shutil
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from mfpo.negatives.config import NEGATIVE_KINDS
from mfpo.schemas import Failure, ResultRecord

INDEX_FILE = "gallery-index.bin"
"""Name of the views' index beside ``dataset.jsonl``."""

ENTRY = struct.Struct("<QI")
"""One index entry: byte offset (u64) and byte length (u32) of a line, little-endian."""

AREA_BUCKETS: tuple[tuple[str, float, float, str], ...] = (
    ("area-under-1", 0.0, 0.01, "mask area < 1%"),
    ("area-1-to-5", 0.01, 0.05, "mask area 1-5%"),
    ("area-5-to-20", 0.05, 0.20, "mask area 5-20%"),
    ("area-20-to-50", 0.20, 0.50, "mask area 20-50%"),
    ("area-over-50", 0.50, math.inf, "mask area >= 50%"),
)
"""(view, lower bound inclusive, upper bound exclusive, label) of the mask-area filters: a tiny mask
barely changes the image, a large one approaches a whole-image perturbation."""

SOURCES = ("annotations", "grounded", "global", "random")

VIEW_LABELS: dict[str, str] = {
    "all": "all records",
    "failed": "failed rows",
    "fallback": "fallback (whole image)",
    "keywords-not-found": "keywords not found",
    **{f"source-{s}": f"regions: {s}" for s in SOURCES},
    **{name: label for name, _, _, label in AREA_BUCKETS},
    **{f"negative-fallback-{kind}": f"{kind} fell back" for kind in NEGATIVE_KINDS},
}
"""Every view a dataset can have, in the order a gallery lists them, with its label."""

VIEWS = tuple(VIEW_LABELS)

IndexedFile = Literal["dataset.jsonl", "failures.jsonl"]


class ViewIndex(BaseModel):
    """Where one view's entries are in ``gallery-index.bin``: entries ``[start, start + count)``."""

    file: IndexedFile = Field(default="dataset.jsonl", description="The file the entries point into.")
    start: int = Field(default=0, ge=0, description="Number of the view's first entry in the index file.")
    count: int = Field(default=0, ge=0, description="Entries (lines) in the view.")


def mask_area(record: ResultRecord) -> float:
    """The record's mask area as a fraction of the image: the sum of its regions' areas, at most 1.

    The record holds one union mask and per-region areas; the sum equals the union's area when regions
    do not overlap and bounds it from above when they do.
    """
    return min(1.0, sum(max(0.0, r.area) for r in record.regions))


def record_views(record: ResultRecord) -> list[str]:
    """The views (besides ``all``, first) that ``record`` belongs to, in :data:`VIEWS` order."""
    views = ["all"]
    if record.perturbation.fallback:
        views.append("fallback")
    if record.keywords_not_found:
        views.append("keywords-not-found")
    sources = {r.source for r in record.regions}
    views += [f"source-{s}" for s in SOURCES if s in sources]
    area = mask_area(record)
    views += [name for name, low, high, _ in AREA_BUCKETS if low <= area < high][:1]
    fell_back = {kind for kind, negative in record.negatives.items() if negative.fallback}
    views += [f"negative-fallback-{kind}" for kind in NEGATIVE_KINDS if kind in fell_back]
    return views


def view_counts(records: Iterable[ResultRecord], failures: int) -> dict[str, ViewIndex]:
    """The views of ``records`` (and ``failures`` failed rows) with their counts, laid out as the index
    file would hold them (for a dataset held in memory, which has no index file)."""
    counts = dict.fromkeys(("all", "failed"), 0)
    for record in records:
        for view in record_views(record):
            counts[view] = counts.get(view, 0) + 1
    counts["failed"] = failures
    return _layout(counts)


def _layout(counts: dict[str, int]) -> dict[str, ViewIndex]:
    out: dict[str, ViewIndex] = {}
    start = 0
    for view in VIEWS:
        if view in counts:
            file: IndexedFile = "failures.jsonl" if view == "failed" else "dataset.jsonl"
            out[view] = ViewIndex(file=file, start=start, count=counts[view])
            start += counts[view]
    return out


class ViewIndexWriter:
    """Streams view entries into one temporary file per view in ``folder`` (through a 64 KiB buffer each);
    :meth:`close` concatenates them into the index file. Memory stays a buffer per view at any size."""

    SPILL = 64 * 1024

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._buffers: dict[str, bytearray] = {"all": bytearray(), "failed": bytearray()}
        self._files: dict[str, Path] = {}
        self._counts: dict[str, int] = {}

    def add(self, views: Iterable[str], offset: int, length: int) -> None:
        """Add the line at ``offset`` (``length`` bytes) to each of ``views``."""
        entry = ENTRY.pack(offset, length)
        for view in views:
            buffer = self._buffers.get(view)
            if buffer is None:
                if view not in VIEW_LABELS:
                    raise ValueError(f"unknown view {view!r}")
                buffer = self._buffers[view] = bytearray()
            buffer += entry
            if len(buffer) >= self.SPILL:
                self._spill(view)

    def _spill(self, view: str) -> None:
        path = self._files.setdefault(view, self.folder / f".tmp-view-{view}")
        with open(path, "ab") as fh:
            fh.write(self._buffers[view])
        self._counts[view] = self._counts.get(view, 0) + len(self._buffers[view]) // ENTRY.size
        self._buffers[view].clear()

    def close(self, target: Path) -> dict[str, ViewIndex]:
        """Write the index to ``target`` (views in :data:`VIEWS` order), drop the temporaries, return the layout."""
        counts = {view: self._counts.get(view, 0) + len(buffer) // ENTRY.size for view, buffer in self._buffers.items()}
        layout = _layout(counts)
        with open(target, "wb") as out:
            for view in layout:
                if view in self._files:
                    with open(self._files[view], "rb") as part:
                        shutil.copyfileobj(part, out)
                out.write(self._buffers[view])
        self.abort()
        return layout

    def abort(self) -> None:
        """Drop the temporaries."""
        for path in self._files.values():
            path.unlink(missing_ok=True)
        self._files, self._counts = {}, {}
        self._buffers = {"all": bytearray(), "failed": bytearray()}


READ_GAP = 64 * 1024
"""Lines closer than this (bytes) are read in one range: a range request costs milliseconds, 64 KiB of transfer
a fraction of one. A page of ``n`` lines reads at most its lines plus ``(n - 1) * READ_GAP`` bytes."""

READ_SPAN = 8 * 1024 * 1024
"""Largest single range read of lines (bytes)."""

RangeReader = Callable[[str, int, int], bytes]
"""``read(name, offset, length)``: bytes of the dataset file ``name`` (``dataset.jsonl``,
``failures.jsonl`` or :data:`INDEX_FILE`), e.g. a local file or a store's range request."""


def read_entries(read: RangeReader, view: ViewIndex, first: int, count: int) -> list[tuple[int, int]]:
    """(offset, length) of the view's entries ``[first, first + count)`` (fewer at its end): one range read."""
    count = max(0, min(count, view.count - first))
    if first < 0 or count == 0:
        return []
    data = read(INDEX_FILE, (view.start + first) * ENTRY.size, count * ENTRY.size)
    if len(data) != count * ENTRY.size:
        raise ValueError(f"{INDEX_FILE} is shorter than its views say ({len(data)} of {count * ENTRY.size} bytes)")
    return list(ENTRY.iter_unpack(data))


def read_lines(read: RangeReader, name: str, entries: list[tuple[int, int]], gap: int = READ_GAP,
               span: int = READ_SPAN, map_fn: Callable[..., Iterator[bytes]] = map) -> list[bytes]:
    """The lines at ``entries`` of file ``name``, in the entries' order: entries closer than ``gap`` bytes
    are read in one range (at most ``span`` bytes), so a page of consecutive lines is one read and a sparse
    filter's page a few; ``map_fn`` runs the reads (e.g. a thread pool's ``map``)."""
    order = sorted(range(len(entries)), key=lambda i: entries[i][0])
    groups: list[list[int]] = []
    for i in order:
        offset, length = entries[i]
        if groups:
            first = entries[groups[-1][0]][0]
            end = sum(entries[groups[-1][-1]])  # lines do not overlap: the last one ends the group
            if offset - end <= gap and offset + length - first <= span:
                groups[-1].append(i)
                continue
        groups.append([i])

    def fetch(group: list[int]) -> bytes:
        first = entries[group[0]][0]
        last = max(entries[j][0] + entries[j][1] for j in group)
        return read(name, first, last - first)

    out: list[bytes] = [b""] * len(entries)
    for group, data in zip(groups, map_fn(fetch, groups), strict=True):
        base = entries[group[0]][0]
        for i in group:
            offset, length = entries[i]
            out[i] = data[offset - base:offset - base + length]
            if len(out[i]) != length:
                raise ValueError(f"{name} is shorter than its index says (line at byte {offset})")
    return out


def read_view(read: RangeReader, views: dict[str, ViewIndex], view: str, first: int, count: int,
              map_fn: Callable[..., Iterator[bytes]] = map, gap: int = READ_GAP) -> list[ResultRecord | Failure]:
    """Entries ``[first, first + count)`` of ``view``: records, or failures for ``failed`` (see :func:`read_lines`
    for ``map_fn`` and ``gap``). KeyError for a view the dataset does not have."""
    index = views[view]
    lines = read_lines(read, index.file, read_entries(read, index, first, count), gap=gap, map_fn=map_fn)
    model: type[ResultRecord] | type[Failure] = Failure if index.file == "failures.jsonl" else ResultRecord
    return [model.model_validate_json(line) for line in lines]
