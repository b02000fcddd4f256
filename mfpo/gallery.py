"""A static HTML gallery of a generated dataset, for people to inspect results, at any size.

One card per :class:`~mfpo.schemas.ResultRecord`:

* the rejected image stacked on the original, with a switch *rejected | original | blink* (the
  blink alternates them in place, which shows where the noise went far better than two images side
  by side), and the mask over the original (tinted red) with one coloured, labelled box per region
  (colour per keyword, listed in a legend with the region's source and area);
* click an image to enlarge its card (CSS ``:target``), and full-size links to the three files;
* the question, the chosen answer with its keywords in ``<mark>``, the rejected answer with the
  words that differ from the chosen one in ``<ins>`` (a word-level diff), the keywords no
  provider located (``keywords_not_found``), the keyword scores r(k_i), the regions and how the
  image was perturbed (MFPO section 3.1).

Failed rows get a card with their reason (``failures.jsonl``). A summary header gives the counts
and the fallback rate; filters (:mod:`mfpo.pipeline.dataset_index`: failed, fallback, keywords not
found, region source, mask-area range) each have their own pages; a layout switch shows the page
as thumbnails (a dense grid of small cards, texts hidden until a card is enlarged) and a checkbox
hides the region boxes.

The pages are static HTML with no script at all: the switches, the blink and the enlargement are
CSS (``:checked``, ``:target``, an animation). The Content Security Policy allows no script, only
the page's own stylesheet (by hash), images from the page's origin and the image links' origins,
and nothing else (``default-src 'none'``). Every text is user data and is HTML-escaped.

Two writers, one renderer (:func:`render_gallery_page`):

* :func:`write_dataset_gallery` writes a dataset folder's pages (``mfpo generate``): one streaming
  pass over ``dataset.jsonl`` renders each card once and appends it to the pages of every filter it
  is in, so memory stays a page per filter at any size. Pages: ``gallery.html``, ``gallery-2.html``,
  ... for all records; ``gallery-{filter}.html``, ``gallery-{filter}-2.html``, ... per filter; and
  ``gallery-ids.html``, ``gallery-ids-2.html``, ...: every id in sorted order with a link to its
  card, the static stand-in for a search box (the first page lists the id range of every page).
* the gateway (``services/gateway/routes/gallery.py``) renders one page per request from one
  page of a filter's index, with a page-size choice and an id search form.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
import struct
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path, PurePosixPath
from typing import Literal

from mfpo.pipeline.dataset import DatasetStats
from mfpo.pipeline.dataset_index import VIEW_LABELS, VIEWS, ViewIndex, mask_area, record_views, view_counts
from mfpo.schemas import Failure, KeywordScore, NegativeRecord, ResultRecord

Layout = Literal["cards", "thumbs"]

PALETTE = ("#ffd400", "#00e5ff", "#76ff03", "#ff9100", "#d500f9", "#2979ff", "#ff4081", "#1de9b6", "#ffffff",
           "#c6ff00")
"""Box colours, one per distinct keyword of a card in order of appearance (``c0``, ``c1``, ...; repeated past
ten); bright and far from the mask's red tint. Regions without a keyword (global, random) are grey, dashed."""

IDS_PER_PAGE = 1000
"""Ids per page of the folder gallery's sorted id list."""

_CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d9dde6; --bg: #f4f5f8; --warn: #b3261e; --accent: #2f5bd3; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
svg.defs { position: absolute; width: 0; height: 0; }
input.ctl { position: absolute; opacity: 0; width: 1px; height: 1px; margin: 0; pointer-events: none; }
header { padding: 16px 24px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 8px; font-size: 20px; }
.summary { display: flex; flex-wrap: wrap; gap: 8px 28px; margin: 0; }
.summary div { display: flex; gap: 6px; }
.summary dt { color: var(--muted); }
.summary dd { margin: 0; font-weight: 600; }
nav.views, .controls, nav.pages { margin-top: 10px; display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
nav.views a, nav.views span.current, nav.pages a, nav.pages span, .controls label, .controls a, nav.per a,
nav.per span.current { padding: 2px 8px; border: 1px solid var(--line); border-radius: 4px; text-decoration: none;
  color: var(--accent); background: #fff; cursor: pointer; }
nav.views span.current, nav.pages span.current, nav.per span.current { background: var(--ink); color: #fff; }
nav.views .n { color: var(--muted); font-size: 12px; }
nav.views span.current .n { color: #cfd5e2; }
.controls .group { display: inline-flex; gap: 4px; align-items: center; margin-right: 12px; }
.controls .what { color: var(--muted); }
nav.per { display: inline-flex; gap: 4px; align-items: center; }
form.search { display: inline-flex; gap: 4px; }
form.search input[type=search] { font: inherit; padding: 1px 6px; border: 1px solid var(--line); border-radius: 4px;
  width: 16em; }
form.search button { font: inherit; padding: 1px 8px; border: 1px solid var(--line); border-radius: 4px;
  background: #fff; cursor: pointer; }
#layout-cards:checked ~ header label[for=layout-cards], #layout-thumbs:checked ~ header label[for=layout-thumbs],
#show-boxes:checked ~ header label[for=show-boxes] { background: var(--ink); color: #fff; }
#show-boxes:not(:checked) ~ main svg.boxes { display: none; }
p.notice { margin: 0; padding: 12px 16px; background: #fff; border: 1px solid var(--line); border-radius: 8px; }
main { padding: 16px 24px; display: grid; gap: 16px; }
.card { position: relative; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px;
        min-width: 0; scroll-margin-top: 8px; }
.card:target { outline: 3px solid var(--accent); }
.card h2 { margin: 0 0 10px; font-size: 14px; font-family: ui-monospace, monospace; word-break: break-all; }
.card h2 a.id { color: inherit; text-decoration: none; }
.card a.close { display: none; float: right; font-family: system-ui, sans-serif; }
.card:target a.close { display: inline; }
.badge { display: inline-block; margin-left: 8px; padding: 0 6px; border-radius: 4px; font-size: 12px;
         background: #fde7c8; color: #7a4100; font-family: system-ui, sans-serif; }
.badge.nf { background: #e4e9ff; color: #243c8f; }
.badge.failed { background: #fbd9d6; color: var(--warn); }
.images { display: grid; grid-template-columns: repeat(2, minmax(0, 360px)); gap: 12px; }
.negatives { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 8px; margin-top: 8px; }
.negatives img { width: 100%; height: auto; display: block; }
.negatives figcaption { font-size: 12px; }
.card:target .images { display: flex; flex-wrap: wrap; align-items: flex-start; }
.card:target figure { max-width: 100%; }
figure { margin: 0; min-width: 0; }
a.zoom { display: block; cursor: zoom-in; }
.stack { position: relative; width: 100%; }
.card:target .stack { width: fit-content; max-width: 100%; }
.stack img { display: block; width: 100%; height: auto; background: #eceef3; }
.card:target .stack img.under { width: auto; min-width: min(560px, 90vw); max-width: 100%; }
.stack img.top, .stack img.tint { position: absolute; inset: 0; width: 100%; height: 100%; background: none; }
.stack img.tint { filter: url(#mask-tint); }
svg.boxes { position: absolute; inset: 0; width: 100%; height: 100%; overflow: hidden; pointer-events: none; }
svg.boxes rect { fill: none; stroke: var(--c); stroke-width: 3px; }
svg.boxes .cg rect { stroke-dasharray: 6 4; }
svg.boxes text { fill: var(--c); font: 600 12px system-ui, sans-serif; paint-order: stroke; stroke: #000;
                 stroke-width: 3px; stroke-linejoin: round; }
.c0 { --c: #ffd400; } .c1 { --c: #00e5ff; } .c2 { --c: #76ff03; } .c3 { --c: #ff9100; } .c4 { --c: #d500f9; }
.c5 { --c: #2979ff; } .c6 { --c: #ff4081; } .c7 { --c: #1de9b6; } .c8 { --c: #ffffff; } .c9 { --c: #c6ff00; }
.cg { --c: #cfd8dc; }
@keyframes blink { 0%, 49.9% { opacity: 1; } 50%, 100% { opacity: 0; } }
.flip-o:checked ~ .images img.top { opacity: 0; }
.flip-b:checked ~ .images img.top { animation: blink 1.2s linear infinite; }
.switch { display: inline-flex; gap: 2px; margin-right: 6px; }
.switch label { padding: 0 6px; border: 1px solid var(--line); border-radius: 3px; cursor: pointer;
                color: var(--accent); }
.flip-r:checked ~ .images .l-r, .flip-o:checked ~ .images .l-o, .flip-b:checked ~ .images .l-b {
  background: var(--ink); color: #fff; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
figcaption a { color: var(--accent); }
ul.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 4px 14px; padding: 0; margin: 8px 0 0;
            font-size: 12px; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px;
          background: var(--c); border: 1px solid #0006; border-radius: 2px; }
.texts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 12px 0; }
.texts dt { color: var(--muted); }
.texts dd { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
mark { background: #ffe066; padding: 0 1px; border-radius: 2px; }
ins { text-decoration: none; background: #ffc9c9; border-bottom: 2px solid #e03131; padding: 0 1px; }
.cut { color: #e03131; font-weight: 700; cursor: help; }
.details { display: flex; flex-wrap: wrap; gap: 8px 32px; align-items: flex-start; }
table { border-collapse: collapse; font-size: 12px; }
caption { text-align: left; color: var(--muted); }
th, td { border-bottom: 1px solid var(--line); padding: 2px 10px 2px 0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.warn { color: var(--warn); }
.reason { white-space: pre-wrap; overflow-wrap: anywhere; }
details.raw pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px; max-height: 20em; overflow: auto; }
#layout-thumbs:checked ~ main { grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 10px; }
#layout-thumbs:checked ~ main > .card { padding: 8px; }
#layout-thumbs:checked ~ main > .card:target { grid-column: 1 / -1; }
#layout-thumbs:checked ~ main > .card:not(:target) h2 { font-size: 11px; margin-bottom: 6px; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }
#layout-thumbs:checked ~ main > .card:not(:target) .images { grid-template-columns: repeat(2, minmax(0, 1fr));
  gap: 4px; }
#layout-thumbs:checked ~ main > .card:not(:target) :is(.texts, .details, ul.legend, figcaption, details.raw) {
  display: none; }
ol.ids { columns: 3 22em; font-family: ui-monospace, monospace; font-size: 12px; margin: 0; padding-left: 3.5em; }
ol.ids li { overflow-wrap: anywhere; }
table.ranges td { font-family: ui-monospace, monospace; }
footer { padding: 0 24px 24px; }
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(_CSS.encode("utf-8")).digest()).decode()

_FILTER = (
    '<svg class="defs" aria-hidden="true">'
    '<filter id="mask-tint" color-interpolation-filters="sRGB">'
    # R' = 1, G' = B' = 0.1, A' = 0.6 * mask luminance (the mask is grey 0 / 255)
    '<feColorMatrix type="matrix" values="0 0 0 0 1  0 0 0 0 0.1  0 0 0 0 0.1  0.6 0 0 0 0"/>'
    "</filter></svg>"
)


def csp(image_sources: Iterable[str] = ("'self'",), search_form: bool = False) -> str:
    """The pages' Content Security Policy: nothing but the stylesheet (by its hash) and images from
    ``image_sources`` (plus ``data:``, the page icon); no script, plugin, font, frame or connection;
    forms only to the page's own origin, and only where there is a search form."""
    images = " ".join(dict.fromkeys([*image_sources, "data:"]))
    form = "'self'" if search_form else "'none'"
    return (f"default-src 'none'; img-src {images}; style-src 'sha256-{_STYLE_HASH}'; script-src 'none'; "
            f"object-src 'none'; base-uri 'none'; form-action {form}")


# --------------------------------------------------------------------------- texts


def highlight(text: str, keywords: Sequence[KeywordScore | str]) -> str:
    """``text`` as HTML with every whole-word, case-insensitive keyword occurrence in ``<mark>``.

    Both the marked and unmarked parts are escaped; longer keywords win over their
    prefixes ("red ball" before "red").
    """
    terms = {(k.text if isinstance(k, KeywordScore) else k).strip().lower() for k in keywords}
    terms.discard("")
    if not terms:
        return _esc(text)
    alternation = "|".join(re.escape(t) for t in sorted(terms, key=lambda t: (-len(t), t)))
    pattern = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)
    out, pos = [], 0
    for m in pattern.finditer(text):
        out.append(_esc(text[pos:m.start()]))
        out.append(f"<mark>{_esc(m.group(0))}</mark>")
        pos = m.end()
    out.append(_esc(text[pos:]))
    return "".join(out)


_TOKENS = re.compile(r"\w+|\s+|[^\w\s]")
_DIFF_MAX_TOKENS = 4000


def word_diff(chosen: str, rejected: str) -> str:
    """``rejected`` as HTML with the words that differ from ``chosen`` in ``<ins>``.

    A word-level diff (:class:`difflib.SequenceMatcher` on words and punctuation, case-insensitive,
    whitespace ignored): words replaced or inserted in ``rejected`` are marked, a run of them (with the
    spaces between) in one ``<ins>``; where words of ``chosen`` were dropped, a ``<span class="cut">``
    caret says which (in its title). Everything is escaped. Texts over 4,000 words each are shown unmarked.
    """
    a = [t for t in _TOKENS.findall(chosen) if not t.isspace()]
    tokens = _TOKENS.findall(rejected)
    words = [i for i, t in enumerate(tokens) if not t.isspace()]
    if len(a) > _DIFF_MAX_TOKENS or len(words) > _DIFF_MAX_TOKENS:
        return _esc(rejected)
    matcher = SequenceMatcher(None, [t.lower() for t in a], [tokens[i].lower() for i in words], autojunk=False)
    changed: set[int] = set()
    cuts: dict[int, list[str]] = {}  # token position -> chosen words dropped just before it
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op in ("replace", "insert"):
            changed.update(words[j] for j in range(j1, j2))
        elif op == "delete":
            cuts.setdefault(words[j1] if j1 < len(words) else len(tokens), []).extend(a[i1:i2])
    out: list[str] = []
    run: list[str] = []  # tokens since the last tag, escaped together
    open_ins = False

    def tag(html_tag: str) -> None:
        out.append(_esc("".join(run)))
        run.clear()
        out.append(html_tag)

    def cut(pos: int) -> str:
        return f'<span class="cut" title="{_esc("dropped: " + " ".join(cuts[pos]))}">&#8248;</span>'

    for pos, token in enumerate(tokens):
        if pos in cuts:
            if open_ins:
                tag("</ins>")
                open_ins = False
            tag(cut(pos))
        if token.isspace():
            nxt = pos + 1
            if open_ins and not (nxt < len(tokens) and nxt in changed and nxt not in cuts):
                tag("</ins>")
                open_ins = False
        elif (pos in changed) != open_ins:
            tag("</ins>" if open_ins else "<ins>")
            open_ins = not open_ins
        run.append(token)
    if open_ins:
        tag("</ins>")
    if len(tokens) in cuts:
        tag(cut(len(tokens)))
    out.append(_esc("".join(run)))
    return "".join(out)


# --------------------------------------------------------------------------- sizes and paths


def png_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first 24 bytes of a PNG (its IHDR), or None when they are not a PNG's."""
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return (width, height) if width and height else None


def known_size(record: ResultRecord) -> tuple[int, int] | None:
    """The image size where the record holds it: a ``global`` region's box is the whole image."""
    for region in record.regions:
        if region.source == "global" and region.box[0] == 0 and region.box[1] == 0:
            w, h = round(region.box[2]), round(region.box[3])
            if w > 0 and h > 0:
                return w, h
    return None


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _inside(out_dir: Path, rel: str, what: str) -> Path:
    """``out_dir / rel`` for a relative path that stays inside ``out_dir``; else ValueError."""
    pure = PurePosixPath(rel.replace("\\", "/"))
    if not rel or pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", rel):
        raise ValueError(f"{what} {rel!r} must be a relative path inside the dataset folder")
    return out_dir / Path(*pure.parts)


def _href(out_dir: Path, page_dir: Path, rel: str) -> str:
    """URL of dataset file ``rel`` as seen from a page in ``page_dir`` (not escaped)."""
    target = _inside(out_dir, rel, "image path")
    link = Path(os.path.relpath(target, page_dir)).as_posix()
    return urllib.parse.quote(link, safe="/")


def _missing(out_dir: Path, record: ResultRecord) -> list[str]:
    """The record's image files that are absent or whose path is not usable."""
    missing = []
    for rel in record.files():
        try:
            ok = _inside(out_dir, rel, "image path").is_file()
        except ValueError:
            ok = False
        if not ok:
            missing.append(rel)
    return missing


def _local_size(out_dir: Path, record: ResultRecord) -> tuple[int, int] | None:
    """The record's image size: from its regions, else from its mask PNG's header (24 bytes read)."""
    size = known_size(record)
    if size is not None:
        return size
    try:
        with open(_inside(out_dir, record.mask, "mask path"), "rb") as fh:
            return png_size(fh.read(24))
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- totals


def summarize(records: Sequence[ResultRecord], failures: int = 0) -> DatasetStats:
    """The header's totals and the filters' counts of a list of records (a written dataset has them in
    ``stats.json``)."""
    stats = DatasetStats(records=len(records), failures=failures)
    stats.fallback = sum(r.perturbation.fallback for r in records)
    stats.sources = dict(Counter(region.source for r in records for region in r.regions))
    stats.modes = dict(Counter(r.perturbation.mode for r in records))
    stats.noise_steps = sorted({r.perturbation.noise_step for r in records})
    stats.views = view_counts(records, failures)
    stats.negatives = dict(Counter(kind for r in records for kind in r.negatives))
    stats.negative_fallbacks = dict(Counter(k for r in records for k, n in r.negatives.items() if n.fallback))
    return stats


def _summary(stats: DatasetStats, failures_html: str, broken: int) -> str:
    """The header's counts over all records (not only this page's); ``failures_html`` is escaped."""
    n = stats.records
    fallback = stats.fallback
    rate = f"{fallback} ({100 * fallback / n:.1f}%)" if n else "0"
    items = [
        ("records", _esc(n)),
        ("failures", failures_html),
        ("fallback (whole image noised)", _esc(rate)),
        ("regions", _esc(", ".join(f"{s} {c}" for s, c in sorted(stats.sources.items())) or "none")),
        ("modes", _esc(", ".join(f"{m} {c}" for m, c in sorted(stats.modes.items())) or "none")),
        ("noise step t", _esc(", ".join(map(str, stats.noise_steps)) or "none")),
    ]
    if stats.negatives and list(stats.negatives) != ["mfpo"]:
        kinds = [f"{k} {c}" + (f" ({stats.negative_fallbacks[k]} fell back)" if stats.negative_fallbacks.get(k) else "")
                 for k, c in stats.negatives.items()]
        items.append(("rejected images", _esc(", ".join(kinds))))
    if broken:
        items.append(("records with missing files", f'<span class="warn">{broken}</span>'))
    cells = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in items)
    return f'<dl class="summary">{cells}</dl>'


# --------------------------------------------------------------------------- cards


def _figure_missing(what: str) -> str:
    return f'<figure><p class="warn">{_esc(what)}: unavailable</p></figure>'


def _img(src: str, alt: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<img{klass} src="{_esc(src)}" alt="{_esc(alt)}" loading="lazy" decoding="async">'


def _full(src: str | None, text: str) -> str:
    return "" if src is None else f'<a class="full" href="{_esc(src)}" target="_blank" rel="noopener">{text}</a>'


def keyword_classes(record: ResultRecord) -> dict[str | None, str]:
    """Colour class per region keyword of a card: ``c0``, ``c1``, ... in order of first appearance (keywords
    first, then regions' other keywords); ``cg`` for regions without a keyword."""
    order = [k.text for k in record.keywords] + [g.keyword for g in record.regions if g.keyword is not None]
    classes: dict[str | None, str] = {None: "cg"}
    for text in dict.fromkeys(order):
        classes[text] = f"c{(len(classes) - 1) % len(PALETTE)}"
    return classes


def _boxes(record: ResultRecord, size: tuple[int, int] | None, classes: Mapping[str | None, str]) -> str:
    """The regions as an SVG over the image: one coloured box and label per region, placed in percent of the
    image's ``size`` (so they follow the image at any display size); empty when the size is unknown."""
    if size is None or not record.regions:
        return ""
    w, h = size
    parts = []
    for g in record.regions:
        x0, y0, x1, y1 = g.box
        x, y = max(0.0, x0) / w * 100, max(0.0, y0) / h * 100
        bw, bh = max(0.0, min(x1, w) - max(0.0, x0)) / w * 100, max(0.0, min(y1, h) - max(0.0, y0)) / h * 100
        label = g.keyword if g.keyword is not None else g.source
        parts.append(
            f'<g class="{classes.get(g.keyword, "cg")}" data-keyword="{_esc(label)}">'
            f'<rect x="{x:.3f}%" y="{y:.3f}%" width="{bw:.3f}%" height="{bh:.3f}%"/>'
            f'<text x="{x:.3f}%" y="{y:.3f}%" dx="4" dy="14">{_esc(label)}</text></g>'
        )
    return f'<svg class="boxes" role="img" aria-label="regions">{"".join(parts)}</svg>'


def _legend(record: ResultRecord, classes: Mapping[str | None, str]) -> str:
    items = []
    for g in record.regions:
        label = g.keyword if g.keyword is not None else f"({g.source})"
        items.append(f'<li><span class="swatch {classes.get(g.keyword, "cg")}"></span>{_esc(label)} '
                     f'<span class="src">{_esc(g.source)}, {100 * g.area:.1f}%</span></li>')
    return f'<ul class="legend">{"".join(items)}</ul>' if items else ""


def _table(cls: str, caption: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A small table; cells are already HTML."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(head)}">none</td></tr>'
    return f'<table class="{cls}"><caption>{caption}</caption><tr>{th}</tr>{body}</table>'


def _details(r: ResultRecord, classes: Mapping[str | None, str]) -> str:
    """Keyword scores, regions and perturbation of a record, side by side."""
    p = r.perturbation
    keywords = _table("keywords", "keywords r(k)", ["keyword", "score"], [
        [f"<td>{_esc(k.text)}</td>", f'<td class="num">{k.score:.4f}</td>'] for k in r.keywords
    ])
    regions = _table("regions", "regions", ["keyword", "source", "area", "box"], [
        [
            f'<td><span class="swatch {classes.get(g.keyword, "cg")}"></span>'
            f"{_esc(g.keyword if g.keyword is not None else '-')}</td>",
            f"<td>{_esc(g.source)}</td>",
            f'<td class="num">{100 * g.area:.1f}%</td>',
            f"<td>{_esc(', '.join(str(round(v)) for v in g.box))}</td>",
        ]
        for g in r.regions
    ])
    fields = [("mode", p.mode), ("t", p.noise_step), ("schedule", p.schedule), ("seed", p.seed),
              ("fallback", "yes" if p.fallback else "no"), ("mask area", f"{100 * mask_area(r):.1f}%")]
    if r.source_size is not None:
        fields.append(("submitted size", f"{r.source_size[0]} x {r.source_size[1]} (reduced)"))
    perturbation = _table("perturbation", "perturbation", ["field", "value"], [
        [f"<td>{name}</td>", f"<td>{_esc(value)}</td>"] for name, value in fields
    ])
    return f'<div class="details">{keywords}{regions}{perturbation}</div>'


def _anchor(prefix: str, name: str) -> tuple[str, str]:
    """(element id, escaped ``#fragment`` href) for a card."""
    ident = f"{prefix}-{name}"
    return ident, _esc("#" + urllib.parse.quote(ident, safe=""))


def record_card(r: ResultRecord, link: Callable[[str], str], n: int, size: tuple[int, int] | None = None,
                missing: Sequence[str] = ()) -> str:
    """One record's card. ``link(rel)`` gives an image's URL (files in ``missing`` get none); ``n`` is unique
    on the page (it names the card's switch); ``size`` (the image's) places the region boxes."""

    def src(rel: str) -> str | None:
        return None if rel in missing else link(rel)

    original, rejected, mask = src(r.image), src(r.rejected_image), src(r.mask)
    ident, zoom = _anchor("item", r.id)
    classes = keyword_classes(r)
    warn = ""
    if missing:
        warn = f'<p class="warn">missing or unusable file(s): {_esc(", ".join(missing))}</p>'
    badges = '<span class="badge">fallback: whole image</span>' if r.perturbation.fallback else ""
    if r.keywords_not_found:
        k = len(r.keywords_not_found)
        badges += f'<span class="badge nf">{k} keyword{"s" if k != 1 else ""} not found</span>'
    t = _esc(r.perturbation.noise_step)
    if original is not None and rejected is not None:
        flip = (
            f'<figure class="flip"><a class="zoom" href="{zoom}" title="enlarge"><div class="stack">'
            f'{_img(original, "original", "under")}{_img(rejected, "rejected image", "top")}</div></a>'
            f'<figcaption><span class="switch"><label class="l-r" for="f{n}-r">rejected</label>'
            f'<label class="l-o" for="f{n}-o">original</label><label class="l-b" for="f{n}-b">blink</label></span>'
            f"t={t} &middot; full size: {_full(original, 'original')} {_full(rejected, 'rejected')}</figcaption>"
            "</figure>"
        )
    else:
        flip = _figure_missing("rejected image")
    regions = len(r.regions)
    if original is not None and mask is not None:
        overlay = (
            f'<figure class="overlay"><a class="zoom" href="{zoom}" title="enlarge"><div class="stack">'
            f'{_img(original, "original under the mask", "under")}{_img(mask, "mask", "tint")}'
            f"{_boxes(r, size, classes)}</div></a>"
            f"<figcaption>mask overlay ({regions} region{'s' if regions != 1 else ''}) &middot; "
            f"{_full(mask, 'mask')}</figcaption></figure>"
        )
    else:
        overlay = _figure_missing("mask overlay")
    system = getattr(r, "system", None)
    system_row = f'<dt>System</dt><dd class="system">{_esc(system)}</dd>' if system else ""
    not_found = ""
    if r.keywords_not_found:
        not_found = f'<dt>Not found</dt><dd class="not-found">{_esc(", ".join(r.keywords_not_found))}</dd>'
    return f"""<article class="card" id="{_esc(ident)}" data-id="{_esc(r.id)}">
<input type="radio" class="ctl flip-r" name="f{n}" id="f{n}-r" checked><input type="radio" class="ctl flip-o" \
name="f{n}" id="f{n}-o"><input type="radio" class="ctl flip-b" name="f{n}" id="f{n}-b">
<h2><a class="close" href="#_">close &times;</a><a class="id" href="{zoom}">{_esc(r.id)}</a>{badges}</h2>{warn}
<div class="images">
{flip}
{overlay}
</div>
{_negatives_strip(r, src)}
{_legend(r, classes)}
<dl class="texts">{system_row}
<dt>Question</dt><dd class="question">{_esc(r.question)}</dd>
<dt>Chosen</dt><dd class="chosen">{highlight(r.chosen, r.keywords)}</dd>
<dt>Rejected</dt><dd class="rejected">{word_diff(r.chosen, r.rejected)}</dd>{not_found}
</dl>
{_details(r, classes)}
</article>"""


def negative_caption(kind: str, negative: NegativeRecord) -> str:
    """One line on how ``kind``'s rejected image was made: the removed object and its eq. 9 score (adavip), the
    crop (mdpo), the measured budget (mbpo), the noised fraction (mfpo, global)."""
    d = negative.details
    if kind == "adavip" and d.get("chosen") is not None and d.get("candidates"):
        chosen = d["candidates"][d["chosen"]]
        others = len(d["candidates"]) - 1
        return (f"removed {_esc(chosen.get('label') or 'object')} (CLIP {float(chosen['score']):.2f}; "
                f"{others} other candidate{'s' if others != 1 else ''})")
    if kind == "mdpo" and isinstance(d.get("crop"), dict):
        c = d["crop"]
        size = f"{_esc(c.get('width'))}&times;{_esc(c.get('height'))}"
        return f"crop {size} at ({_esc(c.get('left'))}, {_esc(c.get('top'))})"
    if kind == "mbpo" and "linf" in d:
        return f"PGD {_esc(d.get('steps'))} steps, L&infin; {_esc(d['linf'])}/255"
    if "area_fraction" in d:
        return f"noise on {100 * float(d['area_fraction']):.0f}% of the image"
    return ""


def _negatives_strip(r: ResultRecord, src: Callable[[str], str | None]) -> str:
    """Every rejected-image kind of the record side by side (shown when the job made more than MFPO's noise)."""
    if not r.negatives or list(r.negatives) == ["mfpo"]:
        return ""
    figures = []
    for kind, negative in r.negatives.items():
        image = src(negative.image)
        picture = _img(image, f"{kind} rejected image") if image is not None else _figure_missing(kind)
        badge = f' <span class="badge">fallback: {_esc(negative.fallback)}</span>' if negative.fallback else ""
        link = f" &middot; {_full(image, 'full size')}" if image is not None else ""
        figures.append(f'<figure class="negative" data-kind="{_esc(kind)}">{picture}<figcaption><b>{_esc(kind)}</b>'
                       f"{badge} {negative_caption(kind, negative)}{link}</figcaption></figure>")
    response = ""
    mbpo = r.negatives.get("mbpo")
    if mbpo is not None and mbpo.response:
        response = (f'<dl class="texts"><dt>MBPO rejected</dt><dd class="rejected mbpo">'
                    f"{word_diff(r.chosen, mbpo.response)}</dd></dl>")
    return f'<div class="negatives">{"".join(figures)}</div>{response}'


_RAW_CHARS = 4000


def failure_card(f: Failure, n: int) -> str:
    """A failed row's card: its id (or row number), stage and reason, and the row as read (truncated); ``n``
    (unique on the page; the failure's number in ``failures.jsonl`` where known) names its anchor."""
    name = f.id if f.id is not None else (f"row {f.row}" if f.row is not None else "unknown row")
    ident, zoom = _anchor("failure", str(n))
    where = f"row {f.row}" if f.row is not None else "row unknown"
    raw = ""
    if f.raw is not None:
        text = f.raw if isinstance(f.raw, str) else json.dumps(f.raw, ensure_ascii=False, indent=1)
        if len(text) > _RAW_CHARS:
            text = text[:_RAW_CHARS] + f"\n... ({len(text) - _RAW_CHARS} more characters)"
        raw = f'<details class="raw"><summary>the row as read</summary><pre>{_esc(text)}</pre></details>'
    return f"""<article class="card failed" id="{_esc(ident)}" data-id="{_esc(f.id or "")}">
<h2><a class="close" href="#_">close &times;</a><a class="id" href="{zoom}">{_esc(name)}</a><span \
class="badge failed">failed: {_esc(f.stage)}</span></h2>
<dl class="texts"><dt>Reason</dt><dd class="reason">{_esc(f.reason)}</dd><dt>Input</dt><dd>{_esc(where)}</dd></dl>
{raw}
</article>"""


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class Navigation:
    """How a page links to the rest of its gallery: static files (the folder) or query URLs (the gateway).

    URLs are returned unescaped (the page escapes them)."""

    page_href: Callable[[int], str]
    """Page ``k`` (0-based) of the page's filter."""
    view_href: Callable[[str], str]
    """The first page of a filter (:data:`~mfpo.pipeline.dataset_index.VIEWS`)."""
    page_sizes: Sequence[tuple[int, str]] = ()
    """Page-size choices and their URLs (the gateway's); empty: the size is fixed."""
    search: bool = False
    """Show an id search form (a GET to the page's own URL, with field ``id``)."""
    search_token: str | None = None
    """Signed-link token the search form sends along (a hidden field)."""
    ids_href: str | None = None
    """The folder's sorted id list."""
    failures_html: str | None = None
    """The header's failure count as HTML (e.g. a link to ``failures.jsonl``); default: the number."""


def _views_nav(stats: DatasetStats, current: str, href: Callable[[str], str]) -> str:
    """Links to every filter the dataset has (with its count); empty when there are none (an old dataset)."""
    if not stats.views:
        return ""
    parts = ['<span class="what">filter:</span>']
    for view in VIEWS:
        index = stats.views.get(view)
        if index is None or (index.count == 0 and view != "all"):
            continue
        text = f'{_esc(VIEW_LABELS[view])} <span class="n">{index.count}</span>'
        if view == current:
            parts.append(f'<span class="current">{text}</span>')
        else:
            parts.append(f'<a href="{_esc(href(view))}" data-view="{view}">{text}</a>')
    return f'<nav class="views" aria-label="filters">{"".join(parts)}</nav>'


def _controls(nav: Navigation, per: int | None) -> str:
    parts = ['<span class="group"><span class="what">layout:</span><label for="layout-cards">cards</label>'
             '<label for="layout-thumbs">thumbnails</label></span>',
             '<span class="group"><label for="show-boxes">region boxes</label></span>']
    if nav.page_sizes:
        sizes = "".join(f'<span class="current">{size}</span>' if size == per else f'<a href="{_esc(url)}">{size}</a>'
                        for size, url in nav.page_sizes)
        parts.append(f'<nav class="per group" aria-label="page size"><span class="what">per page:</span>{sizes}</nav>')
    if nav.search:
        token = "" if nav.search_token is None else (
            f'<input type="hidden" name="token" value="{_esc(nav.search_token)}">')
        parts.append(f'<form class="search group" method="get" role="search">{token}'
                     '<input type="search" name="id" placeholder="item id" aria-label="item id" required>'
                     "<button>find</button></form>")
    if nav.ids_href is not None:
        parts.append(f'<span class="group"><a href="{_esc(nav.ids_href)}">find an id</a></span>')
    return f'<div class="controls">{"".join(parts)}</div>'


def _pager(pages: int, href: Callable[[int], str], current: int, window: int = 3) -> str:
    """Links to the first, last and nearby pages (and previous / next); empty for one page.

    ``href(k)`` is page k's URL (made only for the pages shown: a filter may have thousands)."""
    if pages <= 1:
        return ""

    def link(k: int, text: str) -> str:
        return f'<a href="{_esc(href(k))}">{text}</a>'

    near = range(max(0, current - window), min(pages, current + window + 1))
    shown = sorted({0, pages - 1, *near})
    parts = [link(current - 1, "&larr; previous")] if current > 0 else []
    for prev, k in zip([-1, *shown], shown, strict=False):
        if k - prev > 1:
            parts.append("<span>&hellip;</span>")
        parts.append(f'<span class="current">{k + 1}</span>' if k == current else link(k, str(k + 1)))
    if current < pages - 1:
        parts.append(link(current + 1, "next &rarr;"))
    return f'<nav class="pages" aria-label="pages">{"".join(parts)}</nav>'


def _document(title: str, policy: str, header: str, body: str, footer: str, layout: Layout = "cards") -> str:
    thumbs = " checked" if layout == "thumbs" else ""
    cards = "" if thumbs else " checked"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_esc(policy)}">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>{_esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
{_FILTER}
<input type="radio" class="ctl" name="layout" id="layout-cards"{cards}><input type="radio" class="ctl" \
name="layout" id="layout-thumbs"{thumbs}><input type="checkbox" class="ctl" id="show-boxes" checked>
<header>
{header}
</header>
<main>
{body}
</main>
<footer>{footer}</footer>
</body>
</html>
"""


def _origin(url: str) -> str:
    """CSP source of an image URL: ``'self'`` for a relative one, ``scheme://host[:port]`` else."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme:
        return "'self'"
    if parts.scheme == "file" or not parts.netloc:
        return f"{parts.scheme}:"
    return f"{parts.scheme}://{parts.netloc}"


def render_gallery_page(
    items: Sequence[ResultRecord | Failure],
    title: str,
    link: Callable[[str], str],
    stats: DatasetStats,
    nav: Navigation,
    *,
    view: str = "all",
    page: int = 0,
    pages: int = 1,
    per: int | None = None,
    sizes: Mapping[str, tuple[int, int] | None] | None = None,
    missing: Callable[[ResultRecord], Sequence[str]] | None = None,
    layout: Layout = "cards",
    notice: str | None = None,
    first_number: int = 0,
    broken: int = 0,
) -> str:
    """One gallery page as HTML: ``items`` (records and failed rows) of page ``page`` (0-based) of
    ``pages`` of filter ``view``, for a server that read only these items.

    ``stats`` gives the totals and the filters' counts; image paths become ``link(rel)`` (e.g. presigned
    URLs; their origins are allowed by the page's CSP); ``sizes[record.id]`` is a record's image size,
    which places its region boxes (none without it); ``missing(record)`` lists its unusable files.
    ``notice`` is a line above the cards (escaped); ``first_number`` numbers the cards' switches.
    """
    if not 0 <= page < max(1, pages):
        raise ValueError(f"page {page + 1} does not exist (1-{max(1, pages)})")
    origins: set[str] = set()

    def recorded(rel: str) -> str:
        url = link(rel)
        origins.add(_origin(url))
        return url

    cards = []
    for n, item in enumerate(items, first_number):
        if isinstance(item, Failure):
            cards.append(failure_card(item, n))
        else:
            size = (sizes or {}).get(item.id) or known_size(item)
            cards.append(record_card(item, recorded, n, size, missing(item) if missing else ()))
    return _assemble(cards, title, stats, nav, origins, view=view, page=page, pages=pages, per=per, layout=layout,
                     notice=notice, broken=broken)


def _assemble(cards: Sequence[str], title: str, stats: DatasetStats, nav: Navigation, origins: Iterable[str], *,
              view: str, page: int, pages: int, per: int | None = None, layout: Layout = "cards",
              notice: str | None = None, broken: int = 0) -> str:
    """A page around already rendered ``cards`` (see :func:`render_gallery_page`); ``origins`` are the image
    links' CSP sources."""
    body = "\n".join(cards)
    if not cards:
        body = '<p class="warn">No records.</p>'
    if notice:
        body = f'<p class="notice">{_esc(notice)}</p>\n{body}'
    label = f": {VIEW_LABELS[view]}" if view in VIEW_LABELS and view != "all" else ""
    suffix = f" (page {page + 1} of {pages})" if pages > 1 else ""
    heading = f"{title}{label}{suffix}"
    pager = _pager(pages, nav.page_href, page)
    failures_html = nav.failures_html if nav.failures_html is not None else _esc(stats.failures)
    header = (f"<h1>{_esc(heading)}</h1>\n{_summary(stats, failures_html, broken)}\n"
              f"{_views_nav(stats, view, nav.view_href)}\n{_controls(nav, per)}\n{pager}")
    policy = csp(sorted({*origins, "'self'"}), search_form=nav.search)
    return _document(heading, policy, header, body, pager, layout)


# --------------------------------------------------------------------------- the folder gallery


def write_gallery(
    out_dir: Path,
    records: Sequence[ResultRecord],
    title: str,
    failures_count: int = 0,
    path: str = "gallery.html",
    page_size: int = 100,
    failures: Sequence[Failure] = (),
) -> Path:
    """Write the gallery pages of ``records`` (held in memory) and their ``failures``; return the first page.

    See :func:`write_dataset_gallery` for the pages; ``failures_count`` is the header's failure count when
    the failed rows themselves are not given.
    """
    stats = summarize(records, max(failures_count, len(failures)))
    stats.views["failed"] = ViewIndex(file="failures.jsonl", count=len(failures))
    return _write_folder(Path(out_dir), title, stats, lambda: iter(records), lambda: iter(failures), path,
                         page_size)


def write_dataset_gallery(out_dir: Path, title: str | None = None, path: str = "gallery.html",
                          page_size: int = 100) -> Path:
    """Write the gallery of the dataset folder ``out_dir`` (``dataset.jsonl``, ``failures.jsonl`` and the
    filters' counts in ``stats.json``), streaming; return the first page's path.

    ``path`` is the first page, relative to ``out_dir`` (the records' image paths are relative to
    ``out_dir`` too). Pages of ``page_size`` cards: ``{stem}.html``, ``{stem}-2.html``, ... for every
    record; ``{stem}-{filter}.html``, ``{stem}-{filter}-2.html``, ... for each filter the dataset has;
    ``{stem}-ids.html``, ... the sorted ids. Stale pages of an earlier run are removed.
    """
    from mfpo.pipeline.dataset import read_dataset

    out_dir = Path(out_dir)
    stats_path = out_dir / "stats.json"
    stats = DatasetStats.model_validate_json(stats_path.read_text("utf-8")) if stats_path.is_file() else None
    if stats is None or not stats.views:  # written before the filters existed: count them (one more pass)
        failures = sum(1 for _ in _read_failures(out_dir))
        base = stats or DatasetStats()
        counted = summarize(list(read_dataset(out_dir)), failures)
        stats = base.model_copy(update={"views": counted.views, "records": counted.records, "failures": failures})

    def records() -> Iterator[ResultRecord]:
        return read_dataset(out_dir)

    return _write_folder(out_dir, title or f"MFPO dataset: {out_dir.resolve().name}", stats, records,
                         lambda: _read_failures(out_dir), path, page_size)


def _read_failures(out_dir: Path) -> Iterator[Failure]:
    path = out_dir / "failures.jsonl"
    if path.is_file():
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield Failure.model_validate_json(line)


def _page_name(stem: str, suffix: str, view: str, k: int) -> str:
    base = stem if view == "all" else f"{stem}-{view}"
    return f"{base}{suffix}" if k == 0 else f"{base}-{k + 1}{suffix}"


def _write_folder(out_dir: Path, title: str, stats: DatasetStats, records: Callable[[], Iterator[ResultRecord]],
                  failures: Callable[[], Iterator[Failure]], path: str, page_size: int) -> Path:
    """The folder gallery: a pass to find missing files (the header's count), then one pass rendering each
    card once into the pages of every filter it is in (a page of rendered cards per filter in memory)."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    first = _inside(out_dir, path, "gallery path")
    folder = first.parent
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = first.stem, first.suffix
    broken = {n: m for n, r in enumerate(records()) if (m := _missing(out_dir, r))}
    counts = {v: index.count for v, index in stats.views.items() if index.count or v == "all"}
    counts.setdefault("all", stats.records)
    pages = {v: max(1, math.ceil(c / page_size)) for v, c in counts.items()}
    failures_html = _esc(stats.failures)
    if stats.failures and (out_dir / "failures.jsonl").is_file():
        raw = _esc(Path(os.path.relpath(out_dir / "failures.jsonl", folder)).as_posix())
        failures_html = f'<a href="{raw}">{failures_html}</a>'

    def q(name: str) -> str:
        return urllib.parse.quote(name)

    ids_name = _page_name(stem, suffix, "ids", 0)

    def nav_for(view: str) -> Navigation:
        return Navigation(page_href=lambda k: q(_page_name(stem, suffix, view, k)),
                          view_href=lambda v: q(_page_name(stem, suffix, v, 0)), ids_href=q(ids_name),
                          failures_html=failures_html)

    written: set[str] = set()
    buffers: dict[str, list[str]] = {v: [] for v in counts}  # per filter, the cards of the page being filled
    done = dict.fromkeys(counts, 0)
    ids: list[tuple[str, str]] = []

    def flush(view: str) -> None:
        k = done[view]
        if k >= pages[view]:
            raise ValueError(f"filter {view!r} has more entries than stats.json counts ({counts[view]}): "
                             "the dataset changed after its stats were written")
        name = _page_name(stem, suffix, view, k)
        page = _assemble(buffers[view], title, stats, nav_for(view), ("'self'",), view=view, page=k,
                         pages=pages[view], broken=len(broken))
        (folder / name).write_text(page, encoding="utf-8")
        written.add(name)
        done[view] += 1
        buffers[view] = []

    def add(view: str, card: str) -> None:
        if view not in buffers:
            raise ValueError(f"filter {view!r} is not in stats.json: the dataset changed after its stats were written")
        buffers[view].append(card)
        if len(buffers[view]) == page_size:
            flush(view)

    def target(view: str, prefix: str, name: str) -> str:
        return f"{q(_page_name(stem, suffix, view, done[view]))}#{urllib.parse.quote(f'{prefix}-{name}', safe='')}"

    def link(rel: str) -> str:
        return _href(out_dir, folder, rel)

    for n, record in enumerate(records()):
        card = record_card(record, link, n, _local_size(out_dir, record), broken.get(n, ()))  # once, for every page
        ids.append((record.id, target("all", "item", record.id)))
        for view in record_views(record):
            add(view, card)
    for n, failure in enumerate(failures()):
        if "failed" not in buffers:
            raise ValueError("failures.jsonl has rows that stats.json does not count")
        ids.append((failure.id if failure.id is not None else f"(row {failure.row})",
                    target("failed", "failure", str(n))))
        add("failed", failure_card(failure, n))
    for view in counts:
        if buffers[view] or done[view] == 0:
            flush(view)
    written |= _write_ids(folder, stem, suffix, title, sorted(ids))
    _remove_stale(folder, stem, suffix, written)
    return first


def _write_ids(folder: Path, stem: str, suffix: str, title: str, ids: list[tuple[str, str]]) -> set[str]:
    """The sorted id list: pages of :data:`IDS_PER_PAGE` ids, each linking to its card; the first page also
    lists every page's id range (find the page of an id as in a phone book)."""
    pages = max(1, math.ceil(len(ids) / IDS_PER_PAGE))
    names = [_page_name(stem, suffix, "ids", k) for k in range(pages)]
    hrefs = [urllib.parse.quote(n) for n in names]
    gallery = _esc(urllib.parse.quote(_page_name(stem, suffix, "all", 0)))
    ranges = ""
    if pages > 1:
        rows = "".join(
            f'<tr><td><a href="{_esc(hrefs[k])}">page {k + 1}</a></td><td>{_esc(ids[k * IDS_PER_PAGE][0])}</td>'
            f"<td>{_esc(ids[min(len(ids), (k + 1) * IDS_PER_PAGE) - 1][0])}</td></tr>"
            for k in range(pages))
        ranges = (f'<table class="ranges"><caption>id ranges</caption><tr><th>page</th><th>first</th><th>last</th>'
                  f"</tr>{rows}</table>")
    for k in range(pages):
        chunk = ids[k * IDS_PER_PAGE:(k + 1) * IDS_PER_PAGE]
        start = k * IDS_PER_PAGE + 1
        items = "".join(f'<li><a href="{_esc(target)}">{_esc(i)}</a></li>' for i, target in chunk)
        pager = _pager(pages, hrefs.__getitem__, k)
        heading = f"{title}: ids" + (f" (page {k + 1} of {pages})" if pages > 1 else "")
        header = (f"<h1>{_esc(heading)}</h1>\n<p><a href=\"{gallery}\">&larr; gallery</a> &middot; every record and "
                  f"failed row by id, sorted</p>\n{pager}")
        body = (ranges if k == 0 else "") + (f'<ol class="ids" start="{start}">{items}</ol>' if items else
                                             '<p class="warn">No ids.</p>')
        (folder / names[k]).write_text(_document(heading, csp(), header, body, pager), encoding="utf-8")
    return set(names)


def _remove_stale(folder: Path, stem: str, suffix: str, written: set[str]) -> None:
    """Remove pages of this gallery an earlier run wrote and this one did not (only names it could write)."""
    views = "|".join(re.escape(v) for v in (*VIEWS, "ids") if v != "all")
    pattern = re.compile(rf"^{re.escape(stem)}(?:-(?:{views}))?(?:-[0-9]+)?{re.escape(suffix)}$")
    for page in folder.glob(f"{stem}-*{suffix}"):
        if page.name not in written and pattern.match(page.name) and page.is_file():
            page.unlink()
