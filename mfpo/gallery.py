"""A static HTML gallery of a generated dataset, for people to inspect results.

One card per :class:`~mfpo.schemas.ResultRecord`: the original image, the rejected
image and the mask over the original (tinted red), the question, the chosen answer
with its keywords in ``<mark>``, the rejected answer, the keyword scores r(k_i), the
regions (source, area) and how the image was perturbed (MFPO section 3.1). A summary
header gives the counts and the fallback rate (records whose whole image was noised
because no region was found).

The pages are self-contained static HTML: inline CSS, no scripts, nothing fetched
from elsewhere; images are referenced by relative path and load lazily. The mask
overlay is a CSS composition: the mask PNG stacked on the original and recoloured by
an inline SVG colour-matrix filter (mask luminance -> red alpha), so no extra image
files are written. Every text is user data and is HTML-escaped; a Content Security
Policy forbids scripts on top.

Large datasets are split into pages of ``page_size`` cards: ``gallery.html``,
``gallery-2.html``, ... next to each other, linked from every page.
"""

from __future__ import annotations

import html
import math
import os
import re
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from mfpo.pipeline.dataset import DatasetStats
from mfpo.schemas import KeywordScore, ResultRecord

_CSP = "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'"

_CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d9dde6; --bg: #f4f5f8; --warn: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
header { padding: 16px 24px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 8px; font-size: 20px; }
.summary { display: flex; flex-wrap: wrap; gap: 8px 28px; margin: 0; }
.summary div { display: flex; gap: 6px; }
.summary dt { color: var(--muted); }
.summary dd { margin: 0; font-weight: 600; }
nav.pages { margin-top: 10px; display: flex; flex-wrap: wrap; gap: 6px; }
nav.pages a, nav.pages span { padding: 2px 8px; border: 1px solid var(--line); border-radius: 4px;
                              text-decoration: none; }
nav.pages span.current { background: var(--ink); color: #fff; }
main { padding: 16px 24px; display: grid; gap: 16px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
.card h2 { margin: 0 0 10px; font-size: 14px; font-family: ui-monospace, monospace; word-break: break-all; }
.badge { display: inline-block; margin-left: 8px; padding: 0 6px; border-radius: 4px; font-size: 12px;
         background: #fde7c8; color: #7a4100; font-family: system-ui, sans-serif; }
.images { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 10px; }
figure { margin: 0; }
figure img { display: block; width: 100%; height: auto; background: #eceef3; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 2px; }
.stack { position: relative; }
.stack img.tint { position: absolute; inset: 0; height: 100%; filter: url(#mask-tint); background: none; }
.texts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 12px 0; }
.texts dt { color: var(--muted); }
.texts dd { margin: 0; white-space: pre-wrap; }
mark { background: #ffe066; padding: 0 1px; border-radius: 2px; }
.details { display: flex; flex-wrap: wrap; gap: 8px 32px; align-items: flex-start; }
table { border-collapse: collapse; font-size: 12px; }
caption { text-align: left; color: var(--muted); }
th, td { border-bottom: 1px solid var(--line); padding: 2px 10px 2px 0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.warn { color: var(--warn); }
footer { padding: 0 24px 24px; }
"""

_FILTER = (
    '<svg width="0" height="0" style="position:absolute" aria-hidden="true">'
    '<filter id="mask-tint" color-interpolation-filters="sRGB">'
    # R' = 1, G' = B' = 0.1, A' = 0.6 * mask luminance (the mask is grey 0 / 255)
    '<feColorMatrix type="matrix" values="0 0 0 0 1  0 0 0 0 0.1  0 0 0 0 0.1  0.6 0 0 0 0"/>'
    "</filter></svg>"
)


def write_gallery(
    out_dir: Path,
    records: Sequence[ResultRecord],
    title: str,
    failures_count: int = 0,
    path: str = "gallery.html",
    page_size: int = 500,
) -> Path:
    """Write the gallery pages of ``records`` and return the first page's path.

    ``path`` is the first page, relative to ``out_dir`` (the records' image paths are
    relative to ``out_dir`` too); further pages are ``{stem}-2{suffix}``, ... beside
    it, and stale further pages from an earlier, longer run are removed.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    out_dir = Path(out_dir)
    first = _inside(out_dir, path, "gallery path")
    first.parent.mkdir(parents=True, exist_ok=True)
    pages = max(1, math.ceil(len(records) / page_size))
    names = [first.name] + [f"{first.stem}-{k}{first.suffix}" for k in range(2, pages + 1)]
    missing = [_missing(out_dir, r) for r in records]
    failures_html = _esc(failures_count)
    if failures_count and (out_dir / "failures.jsonl").is_file():
        link = _esc(Path(os.path.relpath(out_dir / "failures.jsonl", first.parent)).as_posix())
        failures_html = f'<a href="{link}">{failures_html}</a>'
    header = _summary(summarize(records, failures_count), failures_html, sum(map(bool, missing)))
    hrefs = [_esc(urllib.parse.quote(name)) for name in names]
    for k in range(pages):
        span = range(k * page_size, min(len(records), (k + 1) * page_size))
        cards = "\n".join(
            _card(records[i], missing[i], lambda rel: _href(out_dir, first.parent, rel)) for i in span
        )
        page = _page(title, header, _nav(hrefs, k), cards or '<p class="warn">No records.</p>', k, pages)
        (first.parent / names[k]).write_text(page, encoding="utf-8")
    stale = pages + 1
    while (first.parent / f"{first.stem}-{stale}{first.suffix}").is_file():
        (first.parent / f"{first.stem}-{stale}{first.suffix}").unlink()
        stale += 1
    return first


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


# --------------------------------------------------------------------------- parts


def render_gallery_page(
    records: Sequence[ResultRecord],
    title: str,
    link: Callable[[str], str],
    page_href: Callable[[int], str],
    stats: DatasetStats,
    page: int = 0,
) -> str:
    """One gallery page (0-based ``page``) as HTML, for a server that read only that page's ``records``;
    ``stats`` gives the totals and the page count. Image paths become ``link(rel)`` (e.g. presigned URLs)
    and page ``k`` is linked as ``page_href(k)``. Same cards as the files :func:`write_gallery` writes."""
    pages = max(1, len(stats.page_offsets))
    if not 0 <= page < pages:
        raise ValueError(f"page {page + 1} does not exist (1-{pages})")
    cards = "\n".join(_card(r, [], lambda rel: _esc(link(rel))) for r in records)
    nav = _nav([_esc(page_href(k)) for k in range(pages)], page)
    return _page(title, _summary(stats, _esc(stats.failures), 0), nav,
                 cards or '<p class="warn">No records.</p>', page, pages)


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _inside(out_dir: Path, rel: str, what: str) -> Path:
    """``out_dir / rel`` for a relative path that stays inside ``out_dir``; else ValueError."""
    pure = PurePosixPath(rel.replace("\\", "/"))
    if not rel or pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", rel):
        raise ValueError(f"{what} {rel!r} must be a relative path inside the dataset folder")
    return out_dir / Path(*pure.parts)


def _href(out_dir: Path, page_dir: Path, rel: str) -> str:
    """URL of dataset file ``rel`` as seen from a page in ``page_dir`` (escaped for an attribute)."""
    target = _inside(out_dir, rel, "image path")
    link = Path(os.path.relpath(target, page_dir)).as_posix()
    return _esc(urllib.parse.quote(link, safe="/"))


def _missing(out_dir: Path, record: ResultRecord) -> list[str]:
    """The record's image files that are absent or whose path is not usable."""
    missing = []
    for rel in (record.image, record.rejected_image, record.mask):
        try:
            ok = _inside(out_dir, rel, "image path").is_file()
        except ValueError:
            ok = False
        if not ok:
            missing.append(rel)
    return missing


def summarize(records: Sequence[ResultRecord], failures: int = 0) -> DatasetStats:
    """The header's totals of a list of records (a written dataset has them in ``stats.json``)."""
    stats = DatasetStats(records=len(records), failures=failures)
    stats.fallback = sum(r.perturbation.fallback for r in records)
    stats.sources = dict(Counter(region.source for r in records for region in r.regions))
    stats.modes = dict(Counter(r.perturbation.mode for r in records))
    stats.noise_steps = sorted({r.perturbation.noise_step for r in records})
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
    if broken:
        items.append(("records with missing files", f'<span class="warn">{broken}</span>'))
    cells = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in items)
    return f'<dl class="summary">{cells}</dl>'


def _nav(hrefs: Sequence[str], current: int, window: int = 3) -> str:
    """Links to the first, last and nearby pages (and previous / next); empty for one page.

    ``hrefs[k]`` is page k's URL, already escaped for an attribute."""
    if len(hrefs) == 1:
        return ""

    def link(k: int, text: str) -> str:
        return f'<a href="{hrefs[k]}">{text}</a>'

    near = range(max(0, current - window), min(len(hrefs), current + window + 1))
    shown = sorted({0, len(hrefs) - 1, *near})
    parts = [link(current - 1, "&larr; previous")] if current > 0 else []
    for prev, k in zip([-1, *shown], shown, strict=False):
        if k - prev > 1:
            parts.append("<span>&hellip;</span>")
        parts.append(f'<span class="current">{k + 1}</span>' if k == current else link(k, str(k + 1)))
    if current < len(hrefs) - 1:
        parts.append(link(current + 1, "next &rarr;"))
    return f'<nav class="pages" aria-label="pages">{"".join(parts)}</nav>'


def _figure(src: str | None, alt: str, caption: str) -> str:
    if src is None:
        body = f'<p class="warn">{_esc(alt)}: unavailable</p>'
    else:
        body = f'<img src="{src}" alt="{_esc(alt)}" loading="lazy" decoding="async">'
    return f"<figure>{body}<figcaption>{caption}</figcaption></figure>"


def _overlay(original: str | None, mask: str | None, regions: int) -> str:
    """The mask over the original: two stacked images, the mask recoloured by ``#mask-tint``."""
    caption = f"mask overlay ({regions} region{'s' if regions != 1 else ''})"
    if original is None or mask is None:
        return _figure(None, "mask overlay", caption)
    return (
        '<figure><div class="stack">'
        f'<img src="{original}" alt="original under the mask" loading="lazy" decoding="async">'
        f'<img class="tint" src="{mask}" alt="mask" loading="lazy" decoding="async">'
        f"</div><figcaption>{caption}</figcaption></figure>"
    )


def _table(cls: str, caption: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A small table; cells are already HTML."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(head)}">none</td></tr>'
    return f'<table class="{cls}"><caption>{caption}</caption><tr>{th}</tr>{body}</table>'


def _details(r: ResultRecord) -> str:
    """Keyword scores, regions and perturbation of a record, side by side."""
    p = r.perturbation
    keywords = _table("keywords", "keywords r(k)", ["keyword", "score"], [
        [f"<td>{_esc(k.text)}</td>", f'<td class="num">{k.score:.4f}</td>'] for k in r.keywords
    ])
    regions = _table("regions", "regions", ["keyword", "source", "area", "box"], [
        [
            f"<td>{_esc(g.keyword if g.keyword is not None else '-')}</td>",
            f"<td>{_esc(g.source)}</td>",
            f'<td class="num">{100 * g.area:.1f}%</td>',
            f"<td>{_esc(', '.join(str(round(v)) for v in g.box))}</td>",
        ]
        for g in r.regions
    ])
    fields = [("mode", p.mode), ("t", p.noise_step), ("schedule", p.schedule), ("seed", p.seed),
              ("fallback", "yes" if p.fallback else "no")]
    perturbation = _table("perturbation", "perturbation", ["field", "value"], [
        [f"<td>{name}</td>", f"<td>{_esc(value)}</td>"] for name, value in fields
    ])
    return f'<div class="details">{keywords}{regions}{perturbation}</div>'


def _card(r: ResultRecord, missing: Sequence[str], href: Callable[[str], str]) -> str:
    """One record's card; ``href(rel)`` gives an image's escaped URL (files in ``missing`` get none)."""

    def src(rel: str) -> str | None:
        return None if rel in missing else href(rel)

    original, rejected, mask = src(r.image), src(r.rejected_image), src(r.mask)
    warn = ""
    if missing:
        warn = f'<p class="warn">missing or unusable file(s): {_esc(", ".join(missing))}</p>'
    badge = '<span class="badge">fallback: whole image</span>' if r.perturbation.fallback else ""
    return f"""<article class="card" data-id="{_esc(r.id)}">
<h2>{_esc(r.id)}{badge}</h2>{warn}
<div class="images">
{_figure(original, "original", "original")}
{_figure(rejected, "rejected image", f"rejected image (t={_esc(r.perturbation.noise_step)})")}
{_overlay(original, mask, len(r.regions))}
</div>
<dl class="texts">
<dt>Question</dt><dd class="question">{_esc(r.question)}</dd>
<dt>Chosen</dt><dd class="chosen">{highlight(r.chosen, r.keywords)}</dd>
<dt>Rejected</dt><dd class="rejected">{_esc(r.rejected)}</dd>
</dl>
{_details(r)}
</article>"""


def _page(title: str, summary: str, nav: str, cards: str, index: int, pages: int) -> str:
    suffix = f" (page {index + 1} of {pages})" if pages > 1 else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<link rel="icon" href="data:,">
<title>{_esc(title)}{suffix}</title>
<style>{_CSS}</style>
</head>
<body>
{_FILTER}
<header>
<h1>{_esc(title)}{suffix}</h1>
{summary}
{nav}
</header>
<main>
{cards}
</main>
<footer>{nav}</footer>
</body>
</html>
"""
