"""The HTML gallery: escaping, highlighting and the answers' diff; the filters' index; the folder's pages per
filter; and real renders in headless Chromium (screenshots kept: the folder is printed at the end)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from support.artifacts import artifact_dir
from support.browser import chromium, load_all_images, serve_directory

from mfpo.gallery import (
    PALETTE,
    highlight,
    keyword_classes,
    png_size,
    word_diff,
    write_dataset_gallery,
    write_gallery,
)
from mfpo.pipeline.dataset import DatasetStats, DatasetWriter, write_dataset
from mfpo.pipeline.dataset_index import (
    ENTRY,
    INDEX_FILE,
    READ_GAP,
    VIEWS,
    ViewIndexWriter,
    read_view,
    record_views,
)
from mfpo.regions.masks import annotation_mask, mask_area, mask_box
from mfpo.schemas import Failure, KeywordScore, PerturbationRecord, PreferenceItem, RegionRecord, ResultRecord
from mfpo.synth import SynthConfig, generate_scenes

INJECTION = ' <script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> & "quotes"'


def _alpha_bar(t: int) -> float:
    """DDPM linear schedule (1e-4 .. 0.02, 1000 steps): prod_{j<=t} (1 - beta_j)."""
    betas = np.linspace(1e-4, 0.02, 1000)
    return float(np.prod(1.0 - betas[: t + 1]))


def _rejected(image: np.ndarray, mask: np.ndarray, t: int, seed: int) -> np.ndarray:
    """Forward-diffusion noise inside ``mask``: sqrt(a) x + sqrt(1 - a) eps, x in [-1, 1]."""
    x = image.astype(np.float64) / 127.5 - 1.0
    eps = np.random.default_rng(seed).standard_normal(x.shape)
    a = _alpha_bar(t)
    noised = np.sqrt(a) * x + np.sqrt(1 - a) * eps
    out = np.where(mask[..., None], noised, x)
    return np.clip((out + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    """Pixels whose (2r+1)^2 neighbourhood lies in ``mask`` (outside the image counts as out)."""
    padded = np.pad(mask, r, constant_values=False)
    out = np.ones_like(mask)
    h, w = mask.shape
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out &= padded[dy:dy + h, dx:dx + w]
    return out


def make_dataset(root: Path, n: int) -> tuple[Path, list[ResultRecord]]:
    """A dataset folder with records built from synthetic scenes (masks from their annotations).

    Record 0 carries a script injection in its texts; record 1 is a global fallback; record 2 (if any) has a
    keyword that was not found and its regions marked ``grounded``.
    """
    items_dir, out_dir = root / "items", root / "dataset"
    generate_scenes(SynthConfig(n=n, seed=5, workers=1), items_dir)
    for sub in ("images", "rejected", "masks"):
        (out_dir / sub).mkdir(parents=True)
    records = []
    for k, line in enumerate((items_dir / "items.jsonl").read_text().splitlines()):
        item = PreferenceItem.model_validate_json(line)
        assert item.id is not None
        shutil.copy(items_dir / item.image, out_dir / "images" / f"{item.id}.png")
        image = np.asarray(Image.open(items_dir / item.image))
        h, w = image.shape[:2]
        fallback = k == 1
        nouns = sorted({a.label for a in item.annotations})
        if fallback:
            mask = np.ones((h, w), bool)
            regions = [RegionRecord(keyword=None, box=(0, 0, w, h), source="global", area=1.0)]
        else:
            per_noun = {n: np.zeros((h, w), bool) for n in nouns}
            for a in item.annotations:
                per_noun[a.label] |= annotation_mask(a, h, w)
            mask = np.logical_or.reduce(list(per_noun.values()))
            source = "grounded" if k == 2 else "annotations"
            regions = [RegionRecord(keyword=n, box=mask_box(m), source=source, area=mask_area(m))
                       for n, m in per_noun.items()]
        Image.fromarray(_rejected(image, mask, 500, k)).save(out_dir / "rejected" / f"{item.id}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(out_dir / "masks" / f"{item.id}.png")
        colour = re.search(r"\b(red|orange|yellow|green|blue|purple|pink|white|black)\b", item.chosen)
        assert colour is not None
        keywords = [KeywordScore(text=n, score=0.3 - 0.01 * i) for i, n in enumerate(nouns)]
        keywords.append(KeywordScore(text=colour.group(1), score=0.05))
        records.append(ResultRecord(
            id=item.id,
            question=item.question + (INJECTION if k == 0 else ""),
            chosen=item.chosen + (INJECTION if k == 0 else ""),
            rejected=item.rejected + (INJECTION if k == 0 else ""),
            image=f"images/{item.id}.png",
            rejected_image=f"rejected/{item.id}.png",
            mask=f"masks/{item.id}.png",
            keywords=keywords,
            regions=regions,
            keywords_not_found=["unicorn"] if k == 2 else [],
            perturbation=PerturbationRecord(mode="annotations", noise_step=500, schedule="linear", seed=k,
                                            fallback=fallback),
        ))
    (out_dir / "failures.jsonl").write_text(json.dumps({"row": 9, "reason": "x", "stage": "image"}) + "\n")
    return out_dir, records


FAILURES = [
    Failure(row=7, id="broken-<b>1</b>", reason="image: cannot identify image file" + INJECTION, stage="image",
            raw={"id": "broken-<b>1</b>", "question": "q" + INJECTION}),
    Failure(row=8, reason="validate: question is empty", stage="validate"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def shots(request: Any) -> Path:
    return artifact_dir(request, "gallery-screenshots")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.csp_errors = []  # type: ignore[attr-defined]
    page.on("console", lambda m: "Content Security Policy" in m.text and page.csp_errors.append(m.text))
    yield page
    context.close()


def _ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("article.card", "cards => cards.map(c => c.dataset.id)")


def test_gallery_renders_every_card_image_and_keyword_in_chromium(tmp_path: Path, page: Any, shots: Path) -> None:
    out_dir, records = make_dataset(tmp_path, 4)
    first = write_gallery(out_dir, records, title="Synthetic <demo>", failures_count=1)
    assert first == out_dir / "gallery.html"
    page.goto(first.as_uri())
    assert page.title() == "Synthetic <demo>"
    assert page.locator("article.card").count() == 4
    assert _ids(page) == [r.id for r in records]

    load_all_images(page)
    widths = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert len(widths) == 4 * 4  # rejected over the original, and the mask over the original
    assert all(w == 512 for _, w in widths), widths

    for k, record in enumerate(records):
        card = page.locator("article.card").nth(k)
        marks = [m.lower() for m in card.locator("dd.chosen mark").all_inner_texts()]
        expected = [kw.text for kw in record.keywords if re.search(rf"\b{kw.text}\b", record.chosen, re.I)]
        assert set(marks) == set(expected) and len(marks) >= len(expected) > 0
        assert card.locator("dd.rejected mark").count() == 0
        # the synthetic rejected answer swaps words of the chosen one: exactly those are marked
        changed = {w.lower() for w in re.findall(r"\w+", record.rejected)} - {
            w.lower() for w in re.findall(r"\w+", record.chosen)}
        inserted = " ".join(card.locator("dd.rejected ins").all_inner_texts()).lower().split()
        assert changed and set(inserted) == changed, (inserted, changed)
        assert "500" in card.locator("table.perturbation").inner_text()
        labels = card.locator("svg.boxes text").evaluate_all("t => t.map(e => e.textContent)")
        assert labels == [g.keyword or g.source for g in record.regions]
        full = card.locator("a.full").evaluate_all("links => links.map(a => a.getAttribute('href'))")
        assert full == [record.image, record.rejected_image, record.mask]
    assert page.locator("article.card").nth(1).locator(".badge").inner_text() == "fallback: whole image"
    third = page.locator("article.card").nth(2)
    assert third.locator(".badge.nf").inner_text() == "1 keyword not found"
    assert third.locator("dd.not-found").inner_text() == "unicorn"
    terms = page.locator("header .summary dt").all_inner_texts()
    summary = dict(zip(terms, page.locator("header .summary dd").all_inner_texts(), strict=True))
    n_annotated = sum(len(r.regions) for r in records if r.regions[0].source == "annotations")
    assert summary == {
        "records": "4",
        "failures": "1",
        "fallback (whole image noised)": "1 (25.0%)",
        "regions": f"annotations {n_annotated}, global 1, grounded {len(records[2].regions)}",
        "modes": "annotations 4",
        "noise step t": "500",
    }
    assert page.locator("header .summary a").get_attribute("href") == "failures.jsonl"

    # the injected markup is shown as text and never runs or loads
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img[src='x']").count() == 0
    chosen = page.locator("article.card").nth(0).locator("dd.chosen").inner_text()
    assert INJECTION.strip() in chosen
    assert INJECTION.strip() in page.locator("article.card").nth(0).locator("dd.question").inner_text()
    assert page.csp_errors == []  # the stylesheet's hash matches: the page is styled under its policy
    assert page.evaluate("getComputedStyle(document.querySelector('main')).display") == "grid"

    shot = shots / "cards.png"
    page.screenshot(path=str(shot), full_page=True)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] > 900 and pixels.std() > 20
    colours = (pixels[..., 0].astype(np.uint32) << 16) | (pixels[..., 1].astype(np.uint32) << 8) | pixels[..., 2]
    assert len(np.unique(colours)) > 1000


def _shot(locator: Any, path: Path) -> np.ndarray:
    locator.screenshot(path=str(path))
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float64)


def test_overlay_tints_the_mask_red_and_boxes_each_keyword_in_its_colour(tmp_path: Path, page: Any,
                                                                          shots: Path) -> None:
    out_dir, records = make_dataset(tmp_path, 1)
    record = records[0]
    page.goto(write_gallery(out_dir, records, title="overlay").as_uri())
    load_all_images(page)
    stack = page.locator("figure.overlay .stack")
    boxed = _shot(stack, shots / "overlay-boxes.png")
    page.locator("label[for=show-boxes]").click()  # the boxes off: the tint alone
    assert page.locator("svg.boxes").is_hidden()
    seen = _shot(stack, tmp_path / "overlay.png")
    page.locator("label.l-o").click()  # the flip figure shows the plain original
    plain = _shot(page.locator("figure.flip .stack"), tmp_path / "plain.png")
    assert seen.shape == plain.shape == boxed.shape
    mask = Image.open(out_dir / record.mask).resize(seen.shape[1::-1], Image.Resampling.NEAREST)
    inside = np.asarray(mask) > 0
    core, away = _erode(inside, 2), _erode(~inside, 2)  # resampling blurs the mask's edge: leave it out
    redness = (seen[..., 0] - seen[..., 1:].mean(-1)) - (plain[..., 0] - plain[..., 1:].mean(-1))
    assert core.sum() > 500 and away.sum() > 500
    assert redness[core].mean() > 60
    # away from the mask the overlay is the plain original (up to sub-pixel resampling of its edges)
    assert np.abs(seen[away] - plain[away]).mean() < 1.0
    assert np.abs(redness[away]).mean() < 1.0

    # each region's box is drawn along its left edge in its keyword's colour; keywords get distinct colours
    classes = keyword_classes(record)
    colours = {g.keyword: PALETTE[int(classes[g.keyword][1:])] for g in record.regions}
    assert len(set(colours.values())) == len(colours) > 1
    scale = boxed.shape[1] / 512
    for g in record.regions:
        x0, y0, _, y1 = g.box
        column = boxed[int(y0 * scale) + 20:int(y1 * scale) - 2, min(boxed.shape[1] - 1, round(x0 * scale))]
        want = np.array([int(colours[g.keyword][i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
        near = np.linalg.norm(column - want, axis=1) < 60
        assert len(column) > 5 and near.mean() > 0.6, (g.keyword, near.mean())
    swatches = page.locator("ul.legend .swatch").evaluate_all(
        "s => s.map(e => getComputedStyle(e).backgroundColor)")
    assert swatches == [f"rgb({', '.join(str(int(colours[g.keyword][i:i + 2], 16)) for i in (1, 3, 5))})"
                        for g in record.regions]


def test_the_switch_shows_original_rejected_or_blinks(tmp_path: Path, page: Any, shots: Path) -> None:
    out_dir, records = make_dataset(tmp_path, 1)
    page.goto(write_gallery(out_dir, records, title="blink").as_uri())
    load_all_images(page)
    flip = page.locator("figure.flip .stack")
    top = "getComputedStyle(document.querySelector('figure.flip img.top'))"
    assert page.evaluate(f"{top}.opacity") == "1"
    rejected = _shot(flip, shots / "flip-rejected.png")
    page.locator("label.l-o").click()
    assert page.evaluate(f"{top}.opacity") == "0"
    original = _shot(flip, shots / "flip-original.png")
    mask = Image.open(out_dir / records[0].mask).resize(rejected.shape[1::-1], Image.Resampling.NEAREST)
    inside = np.asarray(mask) > 0
    diff = np.abs(rejected - original).mean(-1)
    assert diff[_erode(inside, 2)].mean() > 20  # the noise is where the mask is, and only there
    assert diff[_erode(~inside, 2)].mean() < 1.0

    page.locator("label.l-b").click()
    assert page.evaluate(f"{top}.animationName") == "blink"
    seen = set()
    for _ in range(16):
        seen.add(round(float(page.evaluate(f"{top}.opacity"))))
        time.sleep(0.1)
    assert seen == {0, 1}  # both images were shown in turn


def test_filters_thumbnails_enlargement_and_the_id_list_in_chromium(tmp_path: Path, page: Any, shots: Path) -> None:
    out_dir, records = make_dataset(tmp_path, 5)
    (out_dir / "gallery-fallback-2.html").write_text("stale")  # from an earlier, bigger run
    write_dataset(out_dir, records, FAILURES)
    first = write_dataset_gallery(out_dir, title="filters", page_size=3)
    assert not (out_dir / "gallery-fallback-2.html").exists()
    expected = {view: [r.id for r in records if view in record_views(r)] for view in VIEWS}
    with serve_directory(out_dir) as server:
        page.goto(server.url + first.name)
        links = page.locator("nav.views a").evaluate_all("a => a.map(e => [e.dataset.view, e.textContent])")
        shown = {view: int(text.rsplit(" ", 1)[1]) for view, text in links}
        assert shown == {v: len(ids) for v, ids in expected.items() if ids and v != "all"} | {"failed": 2}
        for view, _ in links:
            page.goto(server.url + first.name)
            with page.expect_navigation():
                page.locator(f"nav.views a[data-view={view}]").click()
            ids = []
            while True:
                load_all_images(page)
                assert page.evaluate("Array.from(document.images).every(i => i.naturalWidth > 0)")
                ids += _ids(page)
                nxt = page.locator("header nav.pages a", has_text="next")
                if nxt.count() == 0:
                    break
                with page.expect_navigation():
                    nxt.click()
            assert ids == (expected[view] if view != "failed" else ["broken-<b>1</b>", ""]), view
        # failed rows: their reasons, as text
        page.goto(server.url + "gallery-failed.html")
        assert page.locator("article.failed .reason").first.inner_text().startswith("image: cannot identify")
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.locator("article.failed h2 a.id").all_inner_texts() == ["broken-<b>1</b>", "row 8"]
        page.screenshot(path=str(shots / "failed.png"), full_page=True)

        # thumbnails: a grid of small cards without texts; a click enlarges one card to the page's width
        page.goto(server.url + first.name)
        load_all_images(page)
        page.locator("label[for=layout-thumbs]").click()
        card = page.locator("article.card").nth(1)
        assert card.bounding_box()["width"] < 420 and card.locator("dl.texts").is_hidden()
        page.screenshot(path=str(shots / "thumbnails.png"), full_page=True)
        card.locator("a.zoom").first.click()
        assert page.evaluate("location.hash") == f"#item-{records[1].id}"
        assert card.bounding_box()["width"] > 1000 and card.locator("dl.texts").is_visible()
        assert card.locator("figure.flip img.under").evaluate("i => i.getBoundingClientRect().width") == 560
        page.screenshot(path=str(shots / "enlarged.png"))
        card.locator("a.close").click()
        assert card.bounding_box()["width"] < 420

        # the id list: sorted, every id links to its card (on its page, enlarged)
        with page.expect_navigation():
            page.get_by_role("link", name="find an id").click()
        listed = page.locator("ol.ids a").all_inner_texts()
        assert listed == sorted([r.id for r in records] + ["broken-<b>1</b>", "(row 8)"])
        with page.expect_navigation():
            page.get_by_role("link", name=records[4].id, exact=True).click()
        assert page.url.endswith(f"gallery-2.html#item-{records[4].id}")
        assert page.locator("article.card:target").get_attribute("data-id") == records[4].id
        assert page.csp_errors == []


def test_the_index_pages_a_filter_reading_only_its_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """3,000 records: each filter's entries are exactly its records, and a page of a sparse filter reads the
    index page and its own lines, not the dataset."""
    monkeypatch.setattr(ViewIndexWriter, "SPILL", 10 * ENTRY.size)  # the buffers spill to their files often
    rng = random.Random(3)
    perturbation = PerturbationRecord(mode="auto", noise_step=500, schedule="linear", seed=0, fallback=False)
    records = []
    for k in range(3000):
        fallback = rng.random() < 0.05
        sources = ["global"] if fallback else rng.sample(["annotations", "grounded", "random"], rng.randint(1, 2))
        regions = [RegionRecord(keyword=None if s != "annotations" else "dog", box=(0, 0, 10, 10), source=s,  # type: ignore[arg-type]
                                area=1.0 if fallback else rng.choice([0.004, 0.03, 0.1, 0.3, 0.7]))
                   for s in sources]
        records.append(ResultRecord(
            id=f"r{k:05d}", question="q" * rng.randint(10, 400), chosen="c", rejected="r", image="i.png",
            rejected_image="j.png", mask="m.png", keywords=[], regions=regions,
            keywords_not_found=["cat"] if rng.random() < 0.1 else [],
            perturbation=perturbation.model_copy(update={"fallback": fallback})))
    failures = [Failure(row=k, reason=f"bad {k}", stage="image") for k in range(0, 3000, 97)]
    aborted = DatasetWriter(tmp_path)
    for record in records[:200]:
        aborted.add_record(record)
    aborted.abort()
    assert list(tmp_path.iterdir()) == []  # an error leaves nothing behind, spilled views included
    stats = write_dataset(tmp_path, records, failures)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["dataset.jsonl", "dataset.parquet", "failures.jsonl", INDEX_FILE, "stats.json"])  # no temporaries left
    assert DatasetStats.model_validate_json((tmp_path / "stats.json").read_text()).views == stats.views
    expected = {view: [r.id for r in records if view in record_views(r)] for view in VIEWS}
    assert {v: i.count for v, i in stats.views.items()} == (
        {v: len(ids) for v, ids in expected.items() if ids} | {"failed": len(failures)})
    assert (tmp_path / INDEX_FILE).stat().st_size == ENTRY.size * sum(i.count for i in stats.views.values())

    reads: list[tuple[str, int]] = []

    def read(name: str, offset: int, length: int) -> bytes:
        reads.append((name, length))
        with open(tmp_path / name, "rb") as fh:
            fh.seek(offset)
            return fh.read(length)

    for view in stats.views:
        got = []
        for first in range(0, stats.views[view].count, 50):
            got += read_view(read, stats.views, view, first, 50)
        want = [f.reason for f in failures] if view == "failed" else expected[view]
        assert [g.reason if isinstance(g, Failure) else g.id for g in got] == want, view
    wanted = set(expected["fallback"][50:100])
    lines = sum(len(line) for line in (tmp_path / "dataset.jsonl").read_bytes().splitlines(keepends=True)
                if json.loads(line)["id"] in wanted)
    for gap in (0, READ_GAP):
        reads.clear()
        page = read_view(read, stats.views, "fallback", 50, 50, gap=gap)
        assert [r.id for r in page] == expected["fallback"][50:100]  # type: ignore[union-attr]
        assert reads[0] == (INDEX_FILE, 50 * ENTRY.size)  # one read of the index
        jsonl = [n for name, n in reads if name == "dataset.jsonl"]
        if gap == 0:  # exactly the page's lines (adjacent ones in one read)
            assert 40 < len(jsonl) <= 50 and sum(jsonl) == lines
        else:  # close lines merged: a few reads, bounded by the page (not by the dataset)
            assert len(jsonl) < 10 and sum(jsonl) <= lines + 49 * gap


def test_a_dataset_without_the_index_still_gets_its_filters(tmp_path: Path) -> None:
    out_dir, records = make_dataset(tmp_path, 3)
    write_dataset(out_dir, records, FAILURES)
    stats = json.loads((out_dir / "stats.json").read_text())
    del stats["views"]  # as written before the filters existed
    (out_dir / "stats.json").write_text(json.dumps(stats))
    write_dataset_gallery(out_dir, title="old")
    assert (out_dir / "gallery-fallback.html").is_file() and (out_dir / "gallery-failed.html").is_file()
    assert "broken-&lt;b&gt;1&lt;/b&gt;" in (out_dir / "gallery-failed.html").read_text()
    assert "(row 8)" in (out_dir / "gallery-ids.html").read_text()


def test_pages_link_to_each_other_and_every_file_is_served(tmp_path: Path, page: Any) -> None:
    out_dir, records = make_dataset(tmp_path, 5)
    (out_dir / "gallery-4.html").write_text("stale")
    (out_dir / "gallery-5.html").write_text("stale")
    (out_dir / "gallery-notes.html").write_text("the user's own")
    write_gallery(out_dir, records, title="pages", page_size=2)
    assert sorted(p.name for p in out_dir.glob("gallery*.html") if not re.search(r"-[a-z]", p.name[7:])) == [
        "gallery-2.html", "gallery-3.html", "gallery.html"]
    assert (out_dir / "gallery-notes.html").read_text() == "the user's own"
    with serve_directory(out_dir) as server:
        page.goto(server.url + "gallery.html")
        ids = []
        for expected_cards in (2, 2, 1):
            load_all_images(page)
            cards = page.locator("article.card")
            assert cards.count() == expected_cards
            ids += [cards.nth(k).get_attribute("data-id") for k in range(expected_cards)]
            assert page.evaluate("Array.from(document.images).every(img => img.naturalWidth > 0)")
            current = int(page.locator("header nav.pages span.current").inner_text())
            if current < 3:
                with page.expect_navigation():
                    page.locator("header nav.pages").get_by_role("link", name="next").click()
        assert ids == [r.id for r in records]
        assert "page 3 of 3" in page.title()
        statuses = dict(server.requests)
    for r in records:
        for rel in (r.image, r.rejected_image, r.mask):
            assert statuses.get("/" + rel) in (200, 304), rel
    assert all(code in (200, 304) for code in statuses.values()), statuses


def test_highlight_marks_whole_words_case_insensitively_and_escapes() -> None:
    text = 'Red ball, red BALLS & a redball; <b>"ball"</b> ball-shaped'
    got = highlight(text, [KeywordScore(text="ball", score=1.0), "red ball", "<b>", " "])
    assert got == (
        '<mark>Red ball</mark>, red BALLS &amp; a redball; <mark>&lt;b&gt;</mark>&quot;<mark>ball</mark>'
        '&quot;&lt;/b&gt; <mark>ball</mark>-shaped'
    )
    assert highlight("<i>x</i>", []) == "&lt;i&gt;x&lt;/i&gt;"


def test_word_diff_marks_what_the_rejected_answer_changed() -> None:
    chosen = "A red ball and two cats sit on the <mat>."
    assert word_diff(chosen, chosen) == "A red ball and two cats sit on the &lt;mat&gt;."
    assert word_diff(chosen, "A Red ball and three small dogs sit on the <mat>.") == (
        "A Red ball and <ins>three small dogs</ins> sit on the &lt;mat&gt;.")
    dropped = word_diff(chosen, "A ball and two cats sit.")
    assert dropped == ('A <span class="cut" title="dropped: red">&#8248;</span>ball and two cats sit'
                       '<span class="cut" title="dropped: on the &lt; mat &gt;">&#8248;</span>.')
    assert word_diff("x", "<script>alert(1)</script>") == (
        "<ins>&lt;script&gt;alert(1)&lt;/script&gt;</ins>")


def test_pages_allow_no_script_and_only_their_own_stylesheet(tmp_path: Path) -> None:
    out_dir, records = make_dataset(tmp_path, 2)
    html = write_gallery(out_dir, records, title="csp", failures=FAILURES).read_text()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert policy is not None
    directives = dict(d.strip().split(" ", 1) for d in policy.group(1).replace("&#x27;", "'").split(";"))
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert directives == {"default-src": "'none'", "img-src": "'self' data:", "style-src": f"'sha256-{digest}'",
                          "script-src": "'none'", "object-src": "'none'", "base-uri": "'none'",
                          "form-action": "'none'"}
    assert "<script" not in html.replace("&lt;script", "") and " style=" not in html and " on" not in re.sub(
        r"(?s)<(style|dd|pre|h2|a)[^>]*>.*?</\1>", "", html)


def test_png_size_reads_the_header_only() -> None:
    out = Image.new("L", (37, 21))
    import io

    buf = io.BytesIO()
    out.save(buf, format="PNG")
    assert png_size(buf.getvalue()[:24]) == (37, 21)
    assert png_size(b"GIF89a" + bytes(18)) is None and png_size(buf.getvalue()[:10]) is None


def test_missing_files_and_bad_paths_are_reported(tmp_path: Path) -> None:
    out_dir, records = make_dataset(tmp_path, 2)
    (out_dir / records[1].rejected_image).unlink()
    sub = write_gallery(out_dir, records, title="t", path="views/all.html")
    html = sub.read_text()
    assert sub == out_dir / "views" / "all.html"
    assert f'src="../{records[0].image}"' in html
    assert f"missing or unusable file(s): {records[1].rejected_image}" in html
    assert "records with missing files" in html
    assert (out_dir / "views" / "all-fallback.html").is_file() and (out_dir / "views" / "all-ids.html").is_file()
    bad = records[0].model_copy(update={"mask": "../outside.png"})
    html = write_gallery(out_dir, [bad], title="t").read_text()
    assert "missing or unusable file(s): ../outside.png" in html
    for path in ("../gallery.html", "/tmp/gallery.html", "http://x/gallery.html"):
        with pytest.raises(ValueError, match="relative path inside the dataset folder"):
            write_gallery(out_dir, records, title="t", path=path)
    with pytest.raises(ValueError, match="page_size"):
        write_gallery(out_dir, records, title="t", page_size=0)
    empty = write_gallery(out_dir, [], title="nothing", path="empty.html").read_text()
    assert "No records." in empty and 'class="card"' not in empty


def test_many_pages_get_a_windowed_navigation(tmp_path: Path) -> None:
    record = ResultRecord(
        id="r", question="q", chosen="c", rejected="r", image="i.png", rejected_image="j.png", mask="m.png",
        keywords=[], regions=[], perturbation=PerturbationRecord(
            mode="global", noise_step=500, schedule="linear", seed=0, fallback=True
        ),
    )
    records = [record.model_copy(update={"id": f"r{k}"}) for k in range(12)]
    write_gallery(tmp_path, records, title="many", page_size=1)
    html = (tmp_path / "gallery-6.html").read_text()
    nav = re.search(r'<nav class="pages".*?</nav>', html)
    assert nav is not None
    links = re.findall(r'<a href="([^"]+)">([^<]+)</a>', nav.group(0))
    assert links == [("gallery-5.html", "&larr; previous"), ("gallery.html", "1"), ("gallery-3.html", "3"),
                     ("gallery-4.html", "4"), ("gallery-5.html", "5"), ("gallery-7.html", "7"),
                     ("gallery-8.html", "8"), ("gallery-9.html", "9"), ("gallery-12.html", "12"),
                     ("gallery-7.html", "next &rarr;")]
    assert nav.group(0).count("&hellip;") == 2 and '<span class="current">6</span>' in nav.group(0)
    assert "records with missing files</dt><dd><span class=\"warn\">12</span>" in html
    assert "fallback (whole image noised)</dt><dd>12 (100.0%)" in html
    assert (tmp_path / "gallery-fallback-12.html").is_file()  # every record is a fallback: the same 12 pages
