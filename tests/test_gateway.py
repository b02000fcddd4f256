"""The gateway over a real socket (uvicorn), with a real Celery worker, Redis and S3 over HTTP."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import httpx
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support.images import data_uri, inline_synth_items, png, png_claiming
from support.platform import Gateway, running_platform, wait_for, xdist_index

from mfpo.schemas import ResultRecord
from mfpo.synth import SynthConfig, generate_scenes

ACME = {"Authorization": "Bearer acme-key-0001"}
OTHER = {"Authorization": "Bearer other-key-0002"}


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    limits = {"MFPO_MAX_BODY_BYTES": "2000000", "MFPO_MAX_ITEMS_PER_REQUEST": "50", "MFPO_MAX_TEXT_CHARS": "2000",
              "MFPO_MAX_IMAGE_PIXELS": "1000000"}
    with running_platform(2 + xdist_index(), **limits) as platform:
        yield platform.gateway


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[dict]:
    return inline_synth_items(tmp_path_factory.mktemp("scenes"), SynthConfig(n=100, seed=8, width=64, height=64))


def _client(gateway: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, timeout=30)


def test_hundred_items_over_http_make_a_hundred_record_dataset(gateway, items):
    with _client(gateway) as c:
        job = c.post("/v1/jobs", json={"name": "e2e", "options": {"regions": {"mode": "annotations"}}}, headers=ACME)
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        for start in range(0, 100, 25):
            r = c.post(f"/v1/jobs/{job_id}/items", json={"items": items[start:start + 25]}, headers=ACME)
            assert r.status_code == 200, r.text
            assert len(r.json()["accepted"]) == 25 and r.json()["rejected"] == []
        closed = c.post(f"/v1/jobs/{job_id}/close", headers=ACME)
        assert closed.status_code == 200 and closed.json()["closed_at"]

        def finished() -> bool:
            return c.get(f"/v1/jobs/{job_id}", headers=ACME).json()["status"] == "finished"

        wait_for(finished, 300, "the job to finish", interval_s=1.0, diagnostics=gateway.log)
        status = c.get(f"/v1/jobs/{job_id}", headers=ACME).json()
        assert status["counts"] == {"submitted": 100, "queued": 0, "running": 0, "done": 100, "failed": 0}
        assert status["progress"] == 1.0 and status["eta_seconds"] == 0.0 and status["items_per_second"] > 0
        lines = c.get(f"/v1/jobs/{job_id}/dataset", headers=ACME).text.splitlines()
        records = [ResultRecord.model_validate_json(line) for line in lines]
        assert [r.id for r in records] == [i["id"] for i in items]
        item = c.get(f"/v1/jobs/{job_id}/items/{items[0]['id']}", headers=ACME).json()
        assert item["status"] == "done"
        rejected = httpx.get(item["record"]["rejected_image_url"], timeout=10)  # presigned, no API key
        assert rejected.status_code == 200 and Image.open(io.BytesIO(rejected.content)).size == (64, 64)
        trl = c.get(f"/v1/jobs/{job_id}/dataset", params={"format": "trl"}, headers=ACME)
        assert trl.status_code == 200
        table = pq.read_table(io.BytesIO(trl.content))
        assert table.num_rows == 100 and "rejected_images" in table.column_names
        parquet = c.get(f"/v1/jobs/{job_id}/dataset", params={"format": "parquet"}, headers=ACME)
        assert pq.read_table(io.BytesIO(parquet.content)).num_rows == 100
        assert c.get(f"/v1/jobs/{job_id}/gallery", params={"page": 3}, headers=ACME).status_code == 404
    check_gallery_in_chromium(f"{gateway.url}/v1/jobs/{job_id}/gallery", [i["id"] for i in items])


def check_gallery_in_chromium(url: str, ids: list[str]) -> None:
    """Page 1 renders 100 cards (of ids, in order), every presigned image loads, the pager links page 2."""
    from support.browser import chromium, load_all_images

    with chromium() as browser:
        page = browser.new_page()
        # the API key goes to the gallery request only, not to the presigned image URLs
        page.route("**/gallery*", lambda route: route.continue_(headers={**route.request.headers, **ACME}))
        response = page.goto(url)
        assert response is not None and response.status == 200
        load_all_images(page)
        cards = page.locator("article.card")
        assert cards.count() == 100
        assert [cards.nth(k).get_attribute("data-id") for k in (0, 99)] == [ids[0], ids[99]]
        broken = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth === 0).length")
        assert broken == 0 and page.evaluate("document.images.length") == 400  # original, rejected, 2x overlay
        assert page.locator("nav.pages").count() == 0  # 100 records fill exactly one page
        assert "records" in page.locator("dl.summary").inner_text()


def test_auth_and_tenant_isolation(gateway, items):
    with _client(gateway) as c:
        job_id = c.post("/v1/jobs", json={"name": "mine"}, headers=ACME).json()["id"]
        submitted = c.post(f"/v1/jobs/{job_id}/items", json={"items": items[:1]}, headers=ACME)
        item_id = submitted.json()["accepted"][0]["id"]
        calls = [
            ("POST", "/v1/jobs", {"name": "x"}),
            ("GET", "/v1/jobs", None),
            ("GET", f"/v1/jobs/{job_id}", None),
            ("POST", f"/v1/jobs/{job_id}/items", {"items": []}),
            ("GET", f"/v1/jobs/{job_id}/items/{item_id}", None),
            ("POST", f"/v1/jobs/{job_id}/close", None),
            ("GET", f"/v1/jobs/{job_id}/dataset", None),
            ("GET", f"/v1/jobs/{job_id}/gallery", None),
            ("POST", f"/v1/jobs/{job_id}/uploads", "multipart"),
        ]
        for method, path, body in calls:
            kwargs = {"files": {"file": ("items.jsonl", b"{}")}} if body == "multipart" else {"json": body}
            assert c.request(method, path, **kwargs).status_code == 401, path
            bad = c.request(method, path, headers={"Authorization": "Bearer nope-nope-nope"}, **kwargs)
            assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
            if job_id in path:
                assert c.request(method, path, headers=OTHER, **kwargs).status_code == 404, path
        assert c.get("/v1/jobs", headers=OTHER).json() == {"jobs": [], "next_after": None}
        for open_path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
            assert c.get(open_path).status_code == 200, open_path


def test_hostile_requests_get_4xx_and_the_server_keeps_serving(gateway, items):
    with _client(gateway) as c:
        job_id = c.post("/v1/jobs", json={"name": "hostile"}, headers=ACME).json()["id"]
        items_url = f"/v1/jobs/{job_id}/items"
        cases = [
            (c.post("/v1/jobs", content=b"{not json", headers={**ACME, "content-type": "application/json"}), 422),
            (c.post("/v1/jobs", json={"name": ""}, headers=ACME), 422),
            (c.post("/v1/jobs", json={"name": "x", "options": {"seed": "many"}}, headers=ACME), 422),
            (c.post("/v1/jobs", json={"name": "x", "options": {"nope": 1}}, headers=ACME), 422),
            (c.post("/v1/jobs", json={"name": "x", "options": {"regions": {"mode": "grounded"}}}, headers=ACME), 422),
            (c.post("/v1/jobs", json={"name": "x", "options": {"regions": {"sam": {"checkpoint": "/etc/x"}}}},
                    headers=ACME), 422),
            (c.post("/v1/jobs", json={"name": "x", "options": {"limits": {"max_pixels": 10**12}}}, headers=ACME), 422),
            (c.post(items_url, json={"items": "all"}, headers=ACME), 422),
            (c.post(items_url, json={"items": items[:1] * 51}, headers=ACME), 413),
            (c.post(items_url, content=b"x" * 2_100_000, headers={**ACME, "content-type": "application/json"}), 413),
            (c.get("/v1/jobs/..%2F..%2Fetc", headers=ACME), 404),
            (c.get(f"/v1/jobs/{job_id}/items/..%2Fjob", headers=ACME), 404),
            (c.get(f"/v1/jobs/{job_id}/dataset", params={"format": "csv"}, headers=ACME), 422),
            (c.get(f"/v1/jobs/{job_id}/dataset", headers=ACME), 409),
            (c.get("/v1/nothing", headers=ACME), 404),
        ]
        for response, expected in cases:
            assert response.status_code == expected, (response.request.url, response.text)
            assert response.json()["detail"], response.text
        truncated = base64.b64decode(items[0]["image"].split(",", 1)[1])[:80]
        bad_items = [
            {**items[1], "image": data_uri(truncated)},
            {**items[2], "image": data_uri(b"<html>")},
            {**items[3], "image": "/etc/passwd"},
            {**items[4], "chosen": "x" * 2001},
            {**items[5], "question": 7},
            "not an object",
            {**items[6], "id": "../escape"},
            {**items[7], "image": data_uri(png_claiming(60_000, 60_000))},
            {**items[8], "image": data_uri(png(1200, 900))},
        ]
        result = c.post(items_url, json={"items": bad_items}, headers=ACME)
        assert result.status_code == 200 and result.json()["accepted"] == []
        errors = {r["index"]: r["error"] for r in result.json()["rejected"]}
        assert sorted(errors) == list(range(9))
        assert "corrupt or truncated" in errors[0] and "not an image" in errors[1] and "data: URI" in errors[2]
        assert "longer than 2000" in errors[3] and "question" in errors[4] and "JSON object" in errors[5]
        assert "3600000000 pixels" in errors[7] and "max_pixels=1000000" in errors[8]  # bomb, huge image
        assert c.get("/healthz").status_code == 200
        metrics = c.get("/metrics").text
        assert "mfpo_items_rejected_total 9.0" in metrics and 'status="500"' not in metrics


def _zip(files: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_uploads_jsonl_with_a_zip_and_parquet_with_inline_images(gateway, tmp_path):
    import pyarrow as pa

    path = generate_scenes(SynthConfig(n=4, seed=21, width=64, height=64), tmp_path / "scenes")
    images = {f"images/{p.name}": p.read_bytes() for p in (path.parent / "images").iterdir()}
    with _client(gateway) as c:
        job_id = c.post("/v1/jobs", json={"name": "uploads"}, headers=ACME).json()["id"]
        url = f"/v1/jobs/{job_id}/uploads"
        lines = path.read_text().splitlines()
        lines.insert(2, '{"broken json')
        lines.append(json.dumps({**json.loads(lines[0]), "id": "outside", "image": "/etc/hostname"}))
        r = c.post(url, files={"file": ("items.jsonl", "\n".join(lines).encode()),
                               "images": ("images.zip", _zip(images))}, headers=ACME)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["accepted"]) == 4
        errors = {e["index"]: e["error"] for e in body["rejected"]}
        assert "JSON" in errors[2] and "outside the upload" in errors[5]
        # RLAIF-V parquet, images inline
        png = next(iter(images.values()))
        table = pa.table({"ds_name": ["RLAIF-V"], "image": [{"bytes": png, "path": None}],
                          "question": ["What is it?"], "chosen": ["A red ball."], "rejected": ["A cat."],
                          "origin_dataset": ["x"], "origin_split": ["{}"], "idx": ["7"], "image_path": ["p.png"]})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        r = c.post(url, files={"file": ("rlaifv.parquet", sink.getvalue())}, headers=ACME)
        assert r.status_code == 200 and [a["id"] for a in r.json()["accepted"]] == ["rlaifv-7"], r.text
        # hostile uploads
        slip = c.post(url, files={"file": ("items.jsonl", lines[0].encode()),
                                  "images": ("i.zip", _zip({"../../evil.png": png}))}, headers=ACME)
        assert slip.status_code == 422 and "outside the upload" in slip.json()["detail"]
        broken = c.post(url, files={"file": ("items.jsonl", lines[0].encode()), "images": ("i.zip", b"PK\x03")},
                        headers=ACME)
        assert broken.status_code == 422 and "zip" in broken.json()["detail"]
        wrong = c.post(url, files={"file": ("items.csv", b"a,b")}, headers=ACME)
        assert wrong.status_code == 422 and ".jsonl" in wrong.json()["detail"]
        bad_format = c.post(url, files={"file": ("items.jsonl", lines[0].encode())}, data={"format": "llava"},
                            headers=ACME)
        assert bad_format.status_code == 422
        assert c.post(url, files={"file": ("items.jsonl", b"{}")}, headers=OTHER).status_code == 404
        assert c.get("/healthz").status_code == 200
