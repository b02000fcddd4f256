"""The gateway's gallery, in process (TestClient, the local Redis, a folder store; the tasks drained in process as in
test_gateway_api.py): every filter, page size and id search answered from one page of one index and the job state,
never from the whole dataset; and the pages in headless Chromium over a real socket, opened by a signed link, with
their screenshots kept (the folder is printed at the end of the run)."""

from __future__ import annotations

import base64
import html
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from support.artifacts import artifact_dir
from support.browser import chromium, load_all_images, serve_directory
from support.images import inline_synth_items
from test_gateway_api import ACME, Api, make_api

from mfpo.jobs import JobKeys
from mfpo.pipeline.dataset_index import ENTRY, INDEX_FILE, VIEWS, record_views
from mfpo.schemas import Failure, ResultRecord
from mfpo.stages.blob import pack_images
from mfpo.stages.chunk import Chunk
from mfpo.storage.local import LocalStore
from mfpo.synth import SynthConfig


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from make_api(tmp_path_factory.mktemp("gallery-api"))


@pytest.fixture(scope="module")
def job(api: Api, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished job of 12 items: item 1 has no annotations (a whole-image fallback), item 2 lost the annotation
    of one of its nouns (a keyword not found), item 5's image was corrupted in the store after intake (failed)."""
    rows = inline_synth_items(tmp_path_factory.mktemp("scenes"), SynthConfig(n=12, seed=31, width=64, height=64))
    rows[1] = {**rows[1], "annotations": []}
    labels = sorted({a["label"] for a in rows[2]["annotations"]})
    rows[2] = {**rows[2], "annotations": [a for a in rows[2]["annotations"] if a["label"] != labels[0]]}
    created = api.client.post("/v1/jobs", json={"name": "gallery", "options": {"regions": {"mode": "annotations"}}},
                              headers=ACME)
    job_id = created.json()["id"]
    submitted = api.client.post(f"/v1/jobs/{job_id}/items", json={"items": rows}, headers=ACME)
    assert submitted.status_code == 200 and not submitted.json()["rejected"], submitted.text
    record = api.jobs.get_job("acme", job_id)
    keys = JobKeys("acme", job_id)
    images = {r["id"]: base64.b64decode(r["image"].split(",", 1)[1]) for r in rows}
    for chunk in api.jobs.stored_chunks(record):
        ids = [i.id for i in Chunk.model_validate_json(api.jobs.store.get(keys.artifact(chunk, "items"))).items]
        if rows[5]["id"] in ids:  # corrupted after intake: the item fails at its image
            api.jobs.store.put(keys.artifact(chunk, "images"), pack_images(
                (i, b"garbage" if i == rows[5]["id"] else images[i]) for i in ids))
    assert api.client.post(f"/v1/jobs/{job_id}/close", headers=ACME).status_code == 200
    api.process()
    assert api.client.get(f"/v1/jobs/{job_id}", headers=ACME).json()["status"] == "finished"
    lines = api.jobs.store.get(keys.manifest).decode().splitlines()
    records = [ResultRecord.model_validate_json(line) for line in lines]
    failures = [Failure.model_validate_json(line)
                for line in api.jobs.store.get(f"{keys.dataset}/failures.jsonl").decode().splitlines()]
    assert [f.id for f in failures] == [rows[5]["id"]] and failures[0].stage == "image"
    assert records[1].perturbation.fallback
    assert [k.split()[-1] for k in records[2].keywords_not_found] == [labels[0]]  # e.g. "white balloon"
    return {"id": job_id, "rows": rows, "records": records, "failures": failures, "keys": keys}


class Reads:
    """The store's reads during a block: (method, key, bytes)."""

    def __init__(self, store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[tuple[str, str, int]] = []
        get, get_range = store.get, store.get_range

        def logged_get(key: str) -> bytes:
            data = get(key)
            self.log.append(("get", key, len(data)))
            return data

        def logged_range(key: str, offset: int, length: int) -> bytes:
            data = get_range(key, offset, length)
            self.log.append(("range", key, len(data)))
            return data

        monkeypatch.setattr(store, "get", logged_get)
        monkeypatch.setattr(store, "get_range", logged_range)


def _cards(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<article class="card[^"]*" id="[^"]*" data-id="([^"]*)"', page)]


def test_every_filter_pages_exactly_its_items_reading_one_index_page(api: Api, job: dict[str, Any],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    records = job["records"]
    expected = {view: [r.id for r in records if view in record_views(r)] for view in VIEWS}
    expected["failed"] = [f.id for f in job["failures"]]
    reads = Reads(api.jobs.store, monkeypatch)
    url = f"/v1/jobs/{job['id']}/gallery"
    first = api.client.get(url, headers=ACME).text
    for view in re.findall(r'<a href="[^"]*" data-view="([a-z0-9-]+)">', first):
        ids, page = [], 1
        while True:
            reads.log.clear()
            r = api.client.get(url, params={"view": view, "per": 3, "page": page}, headers=ACME)
            assert r.status_code == 200, (view, page, r.text[:300])
            ids += _cards(r.text)
            # one range read of the index (3 entries), the page's lines by range, each mask's 24-byte header
            index = [n for how, key, n in reads.log if key.endswith(INDEX_FILE)]
            assert index and index[0] == ENTRY.size * len(_cards(r.text)) and len(index) == 1, reads.log
            assert not [e for e in reads.log if e[0] == "get" and e[1].endswith((".jsonl", ".bin"))], reads.log
            masks = [n for how, key, n in reads.log if "/masks/" in key]
            assert all(n == 24 for n in masks) and len(masks) <= 3
            if f'page={page + 1}' not in r.text.split("<main>")[0]:
                break
            page += 1
        assert ids == expected[view], view
        assert page == max(1, -(-len(expected[view]) // 3))
    assert set(re.findall(r'data-view="([a-z0-9-]+)"', first)) == {v for v, ids in expected.items() if ids} - {"all"}
    # the page-size choice, kept with the filter and the layout in every link
    thumbs = api.client.get(url, params={"view": "source-annotations", "layout": "thumbs"}, headers=ACME).text
    sizes = re.findall(r'<a href="\?([^"]+)">(\d+)</a>', thumbs.split('<nav class="per')[1].split("</nav>")[0])
    assert [(q.replace("&amp;", "&"), n) for q, n in sizes] == [
        (f"view=source-annotations&per={n}&layout=thumbs", str(n)) for n in (25, 50, 200)]
    assert 'id="layout-thumbs" checked' in thumbs


def test_the_id_search_finds_done_and_failed_items(api: Api, job: dict[str, Any]) -> None:
    url = f"/v1/jobs/{job['id']}/gallery"
    done = job["records"][3]
    page = api.client.get(url, params={"id": done.id}, headers=ACME)
    assert page.status_code == 200 and _cards(page.text) == [done.id]
    assert "<svg class=\"boxes\"" in page.text and "presigned" not in page.text
    failed = job["failures"][0]
    page = api.client.get(url, params={"id": failed.id}, headers=ACME)
    assert page.status_code == 200 and _cards(page.text) == [failed.id]
    assert "failed: image" in page.text and "class=\"reason\"" in page.text
    missing = api.client.get(url, params={"id": "no-such-item"}, headers=ACME)
    assert missing.status_code == 404 and "no item &#x27;no-such-item&#x27; in this job" in missing.text
    assert 'name="id"' in missing.text  # search again from there


def test_bad_filters_pages_and_parameters_are_refused(api: Api, job: dict[str, Any]) -> None:
    url = f"/v1/jobs/{job['id']}/gallery"
    nope = api.client.get(url, params={"view": "no-such-filter"}, headers=ACME)
    assert nope.status_code == 404 and "no filter" in nope.text and "data-view=\"fallback\"" in nope.text
    assert api.client.get(url, params={"view": "fallback", "page": 2}, headers=ACME).status_code == 404
    for params in ({"per": 0}, {"per": 201}, {"layout": "grid"}, {"view": "../x"}, {"sort": "id"}):
        assert api.client.get(url, params=params, headers=ACME).status_code == 422, params


def test_a_dataset_written_before_the_index_pages_as_before(api: Api, items_few: list[dict]) -> None:
    job_id = api.finished_job(items_few)  # (on the module's gateway: a new one would empty the Redis database)
    keys = JobKeys("acme", job_id)
    stats = json.loads(api.jobs.store.get(keys.stats))
    del stats["views"]
    api.jobs.store.put(keys.stats, json.dumps(stats).encode())
    api.jobs.store.delete(f"{keys.dataset}/{INDEX_FILE}")
    url = f"/v1/jobs/{job_id}/gallery"
    page = api.client.get(url, headers=ACME)
    assert page.status_code == 200 and _cards(page.text) == [r["id"] for r in items_few]
    assert '<nav class="views"' not in page.text and '<nav class="per' not in page.text
    old = api.client.get(url, params={"view": "fallback"}, headers=ACME)
    assert old.status_code == 404 and "only view=all" in old.text


@pytest.fixture(scope="module")
def items_few(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return inline_synth_items(tmp_path_factory.mktemp("few"), SynthConfig(n=3, seed=4, width=64, height=64))


@pytest.fixture
def served(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The gateway on a real socket; the store's files on another (the local store's URLs, like presigned ones,
    point at it). Yields the gateway's URL."""
    import uvicorn

    root = api.jobs.store.root  # type: ignore[attr-defined]
    with serve_directory(root) as files:
        monkeypatch.setattr(LocalStore, "url", lambda self, key, expires=None: files.url + quote(key))
        server = uvicorn.Server(uvicorn.Config(api.client.app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(10)


def test_the_gallery_in_chromium_from_a_signed_link(api: Api, job: dict[str, Any], served: str,
                                                    request: pytest.FixtureRequest) -> None:
    shots = artifact_dir(request, "gallery-gateway-screenshots")
    link = api.client.post(f"/v1/jobs/{job['id']}/gallery-link", headers=ACME).json()
    records = job["records"]
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        csp_errors: list[str] = []
        page.on("console", lambda m: "Content Security Policy" in m.text and csp_errors.append(m.text))
        response = page.goto(served + link["url"])  # no Authorization header anywhere
        assert response is not None and response.status == 200
        load_all_images(page)
        assert page.evaluate("Array.from(document.images).filter(i => i.naturalWidth === 0).length") == 0
        assert page.locator("article.card").count() == len(records)
        page.screenshot(path=str(shots / "all.png"), full_page=True)

        with page.expect_navigation():
            page.locator("nav.views a[data-view=fallback]").click()
        assert page.eval_on_selector_all("article.card", "c => c.map(e => e.dataset.id)") == [records[1].id]
        with page.expect_navigation():
            page.locator("nav.views a[data-view=failed]").click()
        assert page.locator("article.failed .reason").inner_text() == job["failures"][0].reason
        page.screenshot(path=str(shots / "failed.png"))

        with page.expect_navigation():
            page.locator("nav.views a[data-view=all]").click()
        with page.expect_navigation():
            page.locator("nav.per a", has_text="25").click()
        assert "per=25" in page.url and "token=" in page.url
        page.locator("label[for=layout-thumbs]").click()
        load_all_images(page)
        page.screenshot(path=str(shots / "thumbnails.png"), full_page=True)

        page.locator("form.search input[name=id]").fill(records[2].id)
        page.locator("form.search button").click()  # a GET form to the page itself: allowed by its CSP
        page.wait_for_url(re.compile(r"[?&]id="))
        page.wait_for_selector("article.card")
        assert page.eval_on_selector_all("article.card", "c => c.map(e => e.dataset.id)") == [records[2].id]
        load_all_images(page)
        card = page.locator("article.card")
        assert card.locator("dd.not-found").inner_text() == records[2].keywords_not_found[0]
        labels = card.locator("svg.boxes text").evaluate_all("t => t.map(e => e.textContent)")
        assert labels == [g.keyword for g in records[2].regions]
        width = "i => i.getBoundingClientRect().width"
        small = card.locator("figure.flip img.under").evaluate(width)
        card.locator("a.zoom").first.click()
        assert small < 400 and card.locator("figure.flip img.under").evaluate(width) == 560  # a 64 px image, shown big
        page.screenshot(path=str(shots / "item.png"))
        assert csp_errors == []
        context.close()
