"""The HTML gallery: escaping and highlighting, pages, and a real render in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from support.browser import chromium, load_all_images, serve_directory

from mfpo.gallery import highlight, write_gallery
from mfpo.regions.masks import annotation_mask, mask_area, mask_box
from mfpo.schemas import KeywordScore, PerturbationRecord, PreferenceItem, RegionRecord, ResultRecord
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

    Record 0 carries a script injection in its texts; record 1 is a global fallback.
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
            regions = [RegionRecord(keyword=n, box=mask_box(m), source="annotations", area=mask_area(m))
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
            perturbation=PerturbationRecord(mode="annotations", noise_step=500, schedule="linear", seed=k,
                                            fallback=fallback),
        ))
    (out_dir / "failures.jsonl").write_text(json.dumps({"row": 9, "reason": "x", "stage": "image"}) + "\n")
    return out_dir, records


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def test_gallery_renders_every_card_image_and_keyword_in_chromium(tmp_path: Path, page: Any) -> None:
    out_dir, records = make_dataset(tmp_path, 4)
    first = write_gallery(out_dir, records, title="Synthetic <demo>", failures_count=1)
    assert first == out_dir / "gallery.html"
    page.goto(first.as_uri())
    assert page.title() == "Synthetic <demo>"
    assert page.locator("article.card").count() == 4
    assert [page.locator("article.card").nth(k).get_attribute("data-id") for k in range(4)] == [
        r.id for r in records
    ]

    load_all_images(page)
    widths = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert len(widths) == 4 * 4  # original, rejected, and original + mask in the overlay
    assert all(w == 512 for _, w in widths), widths

    for k, record in enumerate(records):
        card = page.locator("article.card").nth(k)
        marks = [m.lower() for m in card.locator("dd.chosen mark").all_inner_texts()]
        expected = [kw.text for kw in record.keywords if re.search(rf"\b{kw.text}\b", record.chosen, re.I)]
        assert set(marks) == set(expected) and len(marks) >= len(expected) > 0
        assert card.locator("dd.rejected mark").count() == 0
        assert "500" in card.locator("table.perturbation").inner_text()
    assert page.locator("article.card").nth(1).locator(".badge").inner_text() == "fallback: whole image"
    terms = page.locator("header .summary dt").all_inner_texts()
    summary = dict(zip(terms, page.locator("header .summary dd").all_inner_texts(), strict=True))
    n_annotated = sum(len(r.regions) for r in records if not r.perturbation.fallback)
    assert summary == {
        "records": "4",
        "failures": "1",
        "fallback (whole image noised)": "1 (25.0%)",
        "regions": f"annotations {n_annotated}, global 1",
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

    shot = tmp_path / "gallery.png"
    page.screenshot(path=str(shot), full_page=True)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] > 900 and pixels.std() > 20
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000


def test_overlay_tints_exactly_the_mask_red(tmp_path: Path, page: Any) -> None:
    out_dir, records = make_dataset(tmp_path, 1)
    page.goto(write_gallery(out_dir, records, title="overlay").as_uri())
    load_all_images(page)
    stack = page.locator(".stack").first
    shot = tmp_path / "overlay.png"
    stack.screenshot(path=str(shot))
    seen = np.asarray(Image.open(shot).convert("RGB")).astype(np.float64)
    plain_shot = tmp_path / "plain.png"
    page.locator("figure img").first.screenshot(path=str(plain_shot))
    plain = np.asarray(Image.open(plain_shot).convert("RGB")).astype(np.float64)
    assert seen.shape == plain.shape
    mask = Image.open(out_dir / records[0].mask).resize(seen.shape[1::-1], Image.Resampling.NEAREST)
    inside = np.asarray(mask) > 0
    core, away = _erode(inside, 2), _erode(~inside, 2)  # resampling blurs the mask's edge: leave it out
    redness = (seen[..., 0] - seen[..., 1:].mean(-1)) - (plain[..., 0] - plain[..., 1:].mean(-1))
    assert core.sum() > 500 and away.sum() > 500
    assert redness[core].mean() > 60
    # away from the mask the overlay is the plain original (up to sub-pixel resampling of its edges)
    assert np.abs(seen[away] - plain[away]).mean() < 1.0
    assert np.abs(redness[away]).mean() < 1.0


def test_pages_link_to_each_other_and_every_file_is_served(tmp_path: Path, page: Any) -> None:
    out_dir, records = make_dataset(tmp_path, 5)
    (out_dir / "gallery-4.html").write_text("stale")
    (out_dir / "gallery-5.html").write_text("stale")
    write_gallery(out_dir, records, title="pages", page_size=2)
    assert sorted(p.name for p in out_dir.glob("gallery*.html")) == ["gallery-2.html", "gallery-3.html",
                                                                       "gallery.html"]
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


def test_missing_files_and_bad_paths_are_reported(tmp_path: Path) -> None:
    out_dir, records = make_dataset(tmp_path, 2)
    (out_dir / records[1].rejected_image).unlink()
    sub = write_gallery(out_dir, records, title="t", path="views/all.html")
    html = sub.read_text()
    assert sub == out_dir / "views" / "all.html"
    assert f'src="../{records[0].image}"' in html
    assert f"missing or unusable file(s): {records[1].rejected_image}" in html
    assert "records with missing files" in html
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
