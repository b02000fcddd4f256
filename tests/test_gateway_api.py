"""The gateway's API in process (FastAPI TestClient, the local Redis, a local folder store); the tasks it queues run
in process too (tests/support/jobs.drain calls what the Celery tasks call). Over a real socket: test_gateway.py."""

from __future__ import annotations

import io
import json
import socket
import statistics
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from support.images import data_uri, inline_synth_items, png
from support.jobs import RecordingSender, drain
from support.platform import redis_url_for_tests, xdist_index

from mfpo.jobs import JobStore, PlatformSettings
from mfpo.synth import SynthConfig
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings

ACME = {"Authorization": "Bearer acme-key-0001"}
OTHER = {"Authorization": "Bearer other-key-0002"}
KEYS = "acme:acme-key-0001,other:other-key-0002"


class Api:
    def __init__(self, client: TestClient, sender: RecordingSender, platform: PlatformSettings) -> None:
        self.client, self.sender, self.platform = client, sender, platform
        self.jobs: JobStore = client.app.state.resources.jobs()  # type: ignore[attr-defined]
        self.redis = client.app.state.resources.redis()  # type: ignore[attr-defined]

    def process(self) -> dict[str, int]:
        """Run what the gateway queued (and what that queues), as the workers would."""
        return drain(self.sender, self.jobs, self.redis, self.platform)

    def finished_job(self, rows: list[dict], **options: Any) -> str:
        job = self.client.post("/v1/jobs", json={"name": "api", "options": {"regions": {"mode": "annotations"},
                                                                            **options}}, headers=ACME)
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        r = self.client.post(f"/v1/jobs/{job_id}/items", json={"items": rows}, headers=ACME)
        assert r.status_code == 200 and not r.json()["rejected"], r.text
        assert self.client.post(f"/v1/jobs/{job_id}/close", headers=ACME).status_code == 200
        self.process()
        assert self.client.get(f"/v1/jobs/{job_id}", headers=ACME).json()["status"] == "finished"
        return job_id


def make_api(tmp_path, **gateway: Any) -> Iterator[Api]:  # type: ignore[no-untyped-def]
    redis_url = redis_url_for_tests(12 + xdist_index())
    platform = PlatformSettings(redis_url=redis_url, store_dir=tmp_path / "store", chunk_size=4,
                                queue_prefix=f"t{uuid.uuid4().hex[:8]}-")
    settings = GatewaySettings(api_keys=SecretStr(KEYS), **gateway)
    app = create_app(settings, platform)
    sender = RecordingSender()
    app.state.resources._celery = sender  # the gateway's sends are recorded and run by Api.process
    with TestClient(app) as client:
        yield Api(client, sender, platform)


@pytest.fixture
def api(tmp_path) -> Iterator[Api]:
    yield from make_api(tmp_path)


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[dict]:
    return inline_synth_items(tmp_path_factory.mktemp("scenes"), SynthConfig(n=10, seed=31, width=64, height=64))


def test_a_curl_body_without_content_type_is_json(api):
    r = api.client.post("/v1/jobs", content=b'{"name": "curl"}', headers={
        **ACME, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 201, r.text


def test_docs_work_offline_with_a_security_scheme_and_an_item_schema(api):
    docs = api.client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static-offline-docs/{asset}" in docs.text
        assert api.client.get(f"/static-offline-docs/{asset}").status_code == 200
    spec = api.client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    body = spec["components"]["schemas"]["ItemsCreate"]["properties"]["items"]
    assert body["items"] == {"$ref": "#/components/schemas/PreferenceItem"} and body["examples"]
    assert {"image", "question", "chosen", "rejected"} <= set(spec["components"]["schemas"]["PreferenceItem"][
        "required"])


def test_job_options_that_cost_time_or_memory_are_bounded(api):
    for options, path in (({"keywords": {"max_iter": 10**7}}, "keywords.max_iter"),
                          ({"keywords": {"max_phrase_words": 40}}, "keywords.max_phrase_words"),
                          ({"keywords": {"extra_stopwords": [f"w{i}" for i in range(600)]}},
                           "keywords.extra_stopwords has more than 500"),
                          ({"perturbation": {"model_resolution": 100_000}}, "perturbation.model_resolution"),
                          ({"png_compress_level": 9}, "png_compress_level"),
                          ({"limits": {"max_working_pixels": 10**9}}, "max_working_pixels")):
        r = api.client.post("/v1/jobs", json={"name": "x", "options": options}, headers=ACME)
        assert r.status_code == 422 and path in r.json()["detail"], (options, r.text)
    ok = api.client.post("/v1/jobs", json={"name": "x", "options": {"keywords": {"max_iter": 500}}}, headers=ACME)
    assert ok.status_code == 201


def test_negatives_kinds_are_job_options_and_their_models_the_deployments(api, items):
    for options, says in (
        ({"negatives": {"kinds": ["adavip"]}}, "negatives kind 'adavip' needs a deployment with a CLIP model"),
        ({"negatives": {"kinds": ["mfpo", "mbpo"]}}, "negatives kind 'mbpo' needs a deployment with the policy"),
        ({"negatives": {"kinds": ["mdpo"], "mbpo": {"model_path": "/etc"}}}, "options.negatives.mbpo.model_path: "
                                                                             "deployment settings"),
        ({"negatives": {"kinds": ["mdpo"], "mbpo": {"steps": 500}}}, "negatives.mbpo.steps is above 50"),
        ({"negatives": {"kinds": ["sd"]}}, "negatives.kinds"),
        ({"negatives": {"kinds": []}}, "negatives.kinds is empty"),
        ({"negatives": "mdpo"}, "options.negatives must be an object"),
    ):
        r = api.client.post("/v1/jobs", json={"name": "x", "options": options}, headers=ACME)
        assert r.status_code == 422 and says in r.json()["detail"], (options, r.text)
    job_id = api.finished_job(items[:5], negatives={"kinds": ["mdpo", "mfpo"]})
    records = api.client.get(f"/v1/jobs/{job_id}/dataset", params={"format": "jsonl"}, headers=ACME)
    assert records.status_code == 200, records.text
    rows = [json.loads(line) for line in records.text.splitlines()]
    assert len(rows) == 5 and all(list(r["negatives"]) == ["mdpo", "mfpo"] for r in rows)
    assert all(r["rejected_image"].startswith("rejected-mdpo/") for r in rows)  # the first kind's


def test_items_are_listed_by_status_a_page_at_a_time(api, items):
    rows = [dict(r) for r in items]
    rows[3] = {**rows[3], "image": data_uri(png(20, 20)[:-12])}  # refused at intake: not listed
    job_id = api.client.post("/v1/jobs", json={"name": "list"}, headers=ACME).json()["id"]
    r = api.client.post(f"/v1/jobs/{job_id}/items", json={"items": rows}, headers=ACME)
    assert [x["index"] for x in r.json()["rejected"]] == [3]
    queued = api.client.get(f"/v1/jobs/{job_id}/items", params={"status": "queued"}, headers=ACME).json()
    assert len(queued["items"]) == 9 and queued["next_after"] is None
    api.process()
    seen, after = [], None
    while True:
        params = {"limit": 4, **({"after": after} if after else {})}
        page = api.client.get(f"/v1/jobs/{job_id}/items", params=params, headers=ACME).json()
        seen += page["items"]
        after = page["next_after"]
        if after is None:
            break
    assert [i["id"] for i in seen] == [r["id"] for k, r in enumerate(rows) if k != 3]
    assert {i["status"] for i in seen} == {"done"}
    assert api.client.get(f"/v1/jobs/{job_id}/items", params={"status": "failed"}, headers=ACME).json()[
        "items"] == []
    bad = api.client.get(f"/v1/jobs/{job_id}/items", params={"after": "../x"}, headers=ACME)
    assert bad.status_code == 422


def test_cancel_stops_the_work_and_delete_removes_the_job(api, items):
    job_id = api.client.post("/v1/jobs", json={"name": "cancel"}, headers=ACME).json()["id"]
    api.client.post(f"/v1/jobs/{job_id}/items", json={"items": items}, headers=ACME)
    cancelled = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    api.process()  # the queued stages find the job cancelled and do nothing
    status = api.client.get(f"/v1/jobs/{job_id}", headers=ACME).json()
    assert status["status"] == "cancelled" and status["counts"]["done"] == 0 and status["stages"] == {}
    assert api.client.post(f"/v1/jobs/{job_id}/items", json={"items": items[:1]}, headers=ACME).status_code == 409
    assert api.client.delete(f"/v1/jobs/{job_id}", headers=OTHER).status_code == 404
    deleted = api.client.delete(f"/v1/jobs/{job_id}", headers=ACME)
    assert deleted.status_code == 202
    assert api.process() == {"mfpo.delete": 1}
    assert api.client.get(f"/v1/jobs/{job_id}", headers=ACME).status_code == 404
    assert list(api.jobs.store.list(f"tenants/acme/jobs/{job_id}/")) == []


def test_the_dataset_in_every_format_and_as_one_tar(api, items):
    job_id = api.finished_job(items)
    url = f"/v1/jobs/{job_id}/dataset"
    for fmt in ("trl", "rlaifv", "hf"):
        r = api.client.get(url, params={"format": fmt}, headers=ACME)
        assert r.status_code == 200, (fmt, r.text[:300])
        assert pq.read_table(io.BytesIO(r.content)).num_rows == len(items)
    lf = api.client.get(url, params={"format": "llamafactory"}, headers=ACME)
    with tarfile.open(fileobj=io.BytesIO(lf.content)) as tar:
        assert "dataset_info.json" in [m.name.split("/")[-1] for m in tar.getmembers()]
    whole = api.client.get(url, params={"format": "tar"}, headers=ACME)
    assert whole.status_code == 200 and whole.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(whole.content)) as tar:
        names = set(tar.getnames())
        records = [json.loads(line) for line in tar.extractfile("dataset.jsonl").read().splitlines()]  # type: ignore[union-attr]
        assert [r["id"] for r in records] == [r["id"] for r in items]
        for rec in records:
            assert {rec["image"], rec["rejected_image"], rec["mask"]} <= names
        assert {"dataset.parquet", "failures.jsonl", "stats.json"} <= names


def test_uploaded_objects_are_named_by_items(api, items):
    image = png(40, 30, (200, 10, 10))
    put = api.client.put("/v1/uploads/scene-1.png", content=image, headers={**ACME, "Content-Type": "image/png"})
    assert put.status_code == 200 and put.json() == {"ref": "store://uploads/scene-1.png", "bytes": len(image),
                                                     "width": 40, "height": 30}
    assert api.client.put("/v1/uploads/..%2Fx", content=image, headers=ACME).status_code in (404, 422)
    assert api.client.put("/v1/uploads/bad.png", content=b"not an image", headers=ACME).status_code == 422
    job_id = api.finished_job([{**items[0], "id": "from-upload", "image": "store://uploads/scene-1.png"}])
    assert api.client.get(f"/v1/jobs/{job_id}/items/from-upload", headers=ACME).json()["status"] == "done"
    other = api.client.post("/v1/jobs", json={"name": "o"}, headers=OTHER).json()["id"]
    r = api.client.post(f"/v1/jobs/{other}/items", json={"items": [{**items[1], "image": "store://uploads/scene-1.png"}]},
                        headers=OTHER)
    assert "no uploaded object" in r.json()["rejected"][0]["error"]  # another tenant's uploads are not visible


def test_upload_errors_name_the_file_not_server_paths(api):
    job_id = api.client.post("/v1/jobs", json={"name": "u"}, headers=ACME).json()["id"]
    r = api.client.post(f"/v1/jobs/{job_id}/uploads", files={"file": ("mine.parquet", b"PAR1 broken")},
                        headers=ACME)
    assert r.status_code == 422 and "mfpo-upload" not in r.text and "/tmp" not in r.text, r.text


def test_the_gallery_opens_with_a_signed_link_and_not_with_a_forged_one(api, items):
    job_id = api.finished_job(items[:3])
    link = api.client.post(f"/v1/jobs/{job_id}/gallery-link", headers=ACME).json()
    assert link["expires_at"] > time.time() + 3600
    page = api.client.get(link["url"])  # no Authorization header: a browser
    assert page.status_code == 200 and items[0]["id"] in page.text
    token = link["token"]
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert api.client.get(f"/v1/jobs/{job_id}/gallery", params={"token": forged}).status_code == 401
    other = api.finished_job(items[3:4])
    assert api.client.get(f"/v1/jobs/{other}/gallery", params={"token": token}).status_code == 401


def test_failed_authentications_are_limited_per_client(tmp_path):
    for api in make_api(tmp_path, auth_failures_per_minute=5):
        codes = [api.client.get("/v1/jobs", headers={"Authorization": f"Bearer guess-{i:04d}"}).status_code
                 for i in range(7)]
        assert codes == [401] * 5 + [429] * 2
        blocked = api.client.get("/v1/jobs", headers=ACME)
        assert blocked.status_code == 429 and 1 <= int(blocked.headers["retry-after"]) <= 60


def test_the_request_limit_is_shared_by_every_replica(tmp_path):
    redis_url = redis_url_for_tests(12 + xdist_index())
    platform = PlatformSettings(redis_url=redis_url, store_dir=tmp_path / "s", queue_prefix=f"r{uuid.uuid4().hex[:6]}-")
    settings = GatewaySettings(api_keys=SecretStr(KEYS), rate_limit_per_minute=4)
    with TestClient(create_app(settings, platform)) as a, TestClient(create_app(settings, platform)) as b:
        codes = [c.get("/v1/jobs", headers=ACME).status_code for c in (a, b, a, b, a)]
    assert codes == [200, 200, 200, 200, 429]
    with TestClient(create_app(settings, platform)) as restarted:  # a restart resets nothing
        assert restarted.get("/v1/jobs", headers=ACME).status_code == 429
        assert restarted.get("/v1/jobs", headers=OTHER).status_code == 200  # per key


def test_an_unauthenticated_body_is_not_read(api):
    """401 from the headers alone: a client announcing 300 MB gets its answer while the body is still unsent."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(api.client.app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        for path in ("/v1/jobs/x/uploads", "/v1/jobs"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                              "Content-Length: 300000000\r\n\r\n").encode() + b"--b\r\n")
                answer = sock.recv(4096).decode()
            assert answer.startswith("HTTP/1.1 401"), answer
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_big_upload_neither_blocks_the_server_nor_extracts_its_zip(api, items, tmp_path, monkeypatch):
    """While 3,000 rows are read and stored, /healthz keeps answering (the rows go through a worker thread); an
    attached zip is read member by member, never extracted: a 1 MB zip holding 400 MB of zeros (besides the images
    the rows use) costs the server no more disk than the zip itself."""
    import uvicorn

    import services.gateway.routes.uploads as uploads

    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(uploads.tempfile, "mkdtemp", lambda prefix="": str(spool / f"{prefix}x"), raising=True)
    (spool / "mfpo-upload-x").mkdir()
    images = {f"img/{n}.png": png(32 + n % 8, 32) for n in range(8)}
    buf = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in images.items():
            zf.writestr(name, data)
        zf.writestr("padding.bin", b"\0" * 400_000_000)
    archive = buf.getvalue()
    assert len(archive) < 1_000_000
    rows = "".join(json.dumps({**items[0], "id": f"big-{n}", "image": f"img/{n % 8}.png"}) + "\n"
                   for n in range(3000)).encode()
    job_id = api.client.post("/v1/jobs", json={"name": "big"}, headers=ACME).json()["id"]
    server = uvicorn.Server(uvicorn.Config(api.client.app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    import httpx

    latencies: list[float] = []
    largest_spool = [0]
    done = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            while not done.is_set():
                t0 = time.perf_counter()
                assert c.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - t0)
                size = sum(p.stat().st_size for p in spool.rglob("*") if p.is_file())
                largest_spool[0] = max(largest_spool[0], size)
                time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=ACME, timeout=300) as c:
            started = time.perf_counter()
            r = c.post(f"/v1/jobs/{job_id}/uploads", files={"file": ("items.jsonl", rows),
                                                            "images": ("images.zip", archive)})
            upload_s = time.perf_counter() - started
    finally:
        done.set()
        watcher.join(30)
        server.should_exit = True
        thread.join(10)
    assert r.status_code == 200, r.text[:500]
    assert len(r.json()["accepted"]) == 3000
    # the loop stayed free: /healthz answered all along (a blocked loop answers once the upload is read, so one
    # call waits for most of it); relative to the upload's own time, so a loaded machine does not fail it
    assert len(latencies) >= 5, (len(latencies), upload_s)
    assert statistics.median(latencies) < 0.25 and max(latencies) < max(0.5, upload_s / 3), (latencies, upload_s)
    assert largest_spool[0] <= len(rows) + len(archive) + 1_000_000  # nothing extracted


def test_a_missing_bucket_is_503_with_the_reason(tmp_path):
    """With a bucket that does not exist (and MFPO_S3_CREATE_BUCKET unset), /readyz and the API answer 503 with the
    reason, not 500 "internal error" with the reason only in the server log."""
    from support.s3_server import running_s3_server

    from mfpo.storage.settings import S3Settings

    with running_s3_server() as s3:
        env = s3.env()
        s3_settings = S3Settings(endpoint=env["MFPO_S3_ENDPOINT"], access_key=env["MFPO_S3_ACCESS_KEY"],
                                 secret_key=env["MFPO_S3_SECRET_KEY"], secure=False, bucket="no-such-bucket")
        platform = PlatformSettings(redis_url=redis_url_for_tests(12 + xdist_index()), s3=s3_settings,
                                    queue_prefix=f"b{uuid.uuid4().hex[:6]}-")
        app = create_app(GatewaySettings(api_keys=SecretStr(KEYS)), platform)
        with TestClient(app) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "no-such-bucket" in ready.json()["checks"]["store"]
            r = client.post("/v1/jobs", json={"name": "x"}, headers=ACME)
            assert r.status_code == 503 and "MFPO_S3_CREATE_BUCKET" in r.json()["detail"], r.text
