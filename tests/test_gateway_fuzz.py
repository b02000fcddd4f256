"""Property-based fuzzing of the gateway's OpenAPI spec (schemathesis) against the real platform.

One gateway per module (uvicorn over a socket, moto S3, the local Redis; no worker: fuzzing
needs no processing). Every operation of ``/openapi.json`` is fuzzed with schema-valid and
schema-violating requests (examples, coverage and fuzzing phases), ``job_id`` either fuzzed
or pinned to a real open / closed job of the tenant so the handlers behind the 404 run too.

Checks: never a 5xx (``not_a_server_error``); every status code is one the spec documents
(``status_code_conformance``: the routes declare their 400/401/404/409/413/422/429/503 with an
``ErrorPublic`` body); status, content type, body and headers conform to the spec.
Then the same kind of requests go without a key and with another tenant's key: never a 5xx,
never a 2xx on a ``/v1`` route without a key, never a 2xx on another tenant's job. The spec
says ``items`` is a list of anything, so a Hypothesis test also fuzzes the items themselves
(valid, truncated and foreign images, ``store://`` keys, unsafe ids, odd texts and
annotations): every item is accepted or refused with a reason, never a 5xx. Last, the
gateway still answers ``/healthz`` and its log holds no traceback.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck as HypothesisHealthCheck
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.config import HealthCheck
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.platform import API_KEYS, Platform, running_platform, xdist_index

MAX_EXAMPLES = 50


def success_body_conforms(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """``response_schema_conformance`` for 2xx bodies only (4xx bodies: see ``error_has_readable_detail``)."""
    if response.status_code < 300:
        return response_schema_conformance(ctx, response, case)
    return None


def error_has_readable_detail(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx is ``{"detail": "<readable text>"}``: the gateway's contract, where FastAPI's spec says
    422 carries a list of validation errors."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"], response.text
    return None


CHECKS = [not_a_server_error, negative_data_rejection, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, error_has_readable_detail]
# Routes whose 200 body is not JSON (Prometheus text; JSONL / Parquet datasets): no body schema check.
RAW_BODY = {"GET /metrics", "GET /v1/jobs/{job_id}/dataset"}
RAW_CHECKS = [not_a_server_error, negative_data_rejection, status_code_conformance, content_type_conformance,
              response_headers_conformance, error_has_readable_detail]
# Routes that answer schema-violating *items* one by one (200 with a reason per item in 'rejected', by contract):
# the body-level "schema-violating request accepted" check does not apply to them; every other check does.
PER_ITEM = {"POST /v1/jobs/{job_id}/items"}
PER_ITEM_CHECKS = [c for c in CHECKS if c is not negative_data_rejection]


def checks_for(case: schemathesis.Case) -> list:  # type: ignore[type-arg]
    label = f"{case.method.upper()} {case.path}"
    return RAW_CHECKS if label in RAW_BODY else PER_ITEM_CHECKS if label in PER_ITEM else CHECKS
LIMITS = {
    # small limits so the fuzzer reaches the 413 paths; a high rate limit so it never meets 429
    "MFPO_MAX_BODY_BYTES": "200000",
    "MFPO_MAX_ITEMS_PER_REQUEST": "20",
    "MFPO_MAX_TEXT_CHARS": "500",
    "MFPO_MAX_IMAGE_PIXELS": "1000000",
    "MFPO_RATE_LIMIT_PER_MINUTE": "100000",
}


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    # Redis databases 10/11: 2+ is test_gateway, 8+ test_worker, 13+ test_resilience, 15 bench/platform_e2e.py
    with running_platform(10 + xdist_index(), with_worker=False, **LIMITS) as running:
        yield running


@pytest.fixture(scope="module")
def jobs(platform: Platform) -> dict[str, str]:
    """Real jobs of tenant acme the fuzzer may target: one left open, one closed."""
    with httpx.Client(base_url=platform.gateway.url, headers=platform.headers("acme"), timeout=30) as c:
        ids = {}
        for name in ("open", "closed"):
            r = c.post("/v1/jobs", json={"name": f"fuzz-{name}", "options": {"regions": {"mode": "annotations"}}})
            assert r.status_code == 201, r.text
            ids[name] = r.json()["id"]
        assert c.post(f"/v1/jobs/{ids['closed']}/close").status_code == 200
    return ids


def _load_schema(platform: Platform, phases: list[str]) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(platform.gateway.url + "/openapi.json", timeout=30)
    schema.config.update(base_url=platform.gateway.url, request_timeout=30,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
    schema.config.phases.update(phases=phases)
    return schema


@pytest.fixture(scope="module")
def api_schema(platform: Platform) -> schemathesis.BaseSchema:
    """Coverage and fuzzing (the tests that also pick which job to target)."""
    return _load_schema(platform, ["coverage", "fuzzing"])


@pytest.fixture(scope="module")
def examples_schema(platform: Platform) -> schemathesis.BaseSchema:
    """The spec's own examples (they cannot be combined with extra ``given`` parameters)."""
    return _load_schema(platform, ["examples"])


schema = schemathesis.pytest.from_fixture("api_schema")
examples = schemathesis.pytest.from_fixture("examples_schema")


@pytest.fixture(autouse=True)
def _schemathesis_node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis 4 (from_fixture) reads ``node._nodeid``, which pytest 9 no longer has; give it one."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def _target(case: schemathesis.Case, which: str, jobs: dict[str, str]) -> None:
    """Point ``job_id`` at a real job (``which``: fuzzed, open or closed); close never targets the open one, and
    cancel / delete get a job of their own (the others must stay as they are for the rest of the fuzzing)."""
    if which == "fuzzed" or "job_id" not in (case.path_parameters or {}):
        return
    if case.path.endswith("/close"):
        which = "closed"
    if case.path.endswith("/cancel") or case.method.upper() == "DELETE":
        with httpx.Client(base_url=case.operation.schema.config.base_url, timeout=30,
                          headers={"Authorization": f"Bearer {API_KEYS['acme']}"}) as c:
            case.path_parameters["job_id"] = c.post("/v1/jobs", json={"name": "fuzz-disposable"}).json()["id"]
        return
    case.path_parameters["job_id"] = jobs[which]


@schema.parametrize()
@schema.given(which=st.sampled_from(["fuzzed", "open", "closed"]))
@settings(deadline=None)
def test_api_conforms_and_never_answers_5xx(case: schemathesis.Case, which: str, platform: Platform,
                                            jobs: dict[str, str]) -> None:
    _target(case, which, jobs)
    case.call_and_validate(headers=platform.headers("acme"), checks=checks_for(case))


@examples.parametrize()
@settings(deadline=None)
def test_the_specs_examples_are_answered_as_documented(case: schemathesis.Case, platform: Platform,
                                                       jobs: dict[str, str]) -> None:
    _target(case, "open", jobs)
    case.call_and_validate(headers=platform.headers("acme"), checks=checks_for(case))


@schema.parametrize()
@schema.given(which=st.sampled_from(["fuzzed", "open"]))
@settings(deadline=None, max_examples=10)
def test_no_key_and_other_tenant_never_5xx_nor_2xx(case: schemathesis.Case, which: str, platform: Platform,
                                                   jobs: dict[str, str]) -> None:
    _target(case, which, jobs)
    for name in list(case.headers or {}):
        if name.lower() == "authorization":
            del case.headers[name]
    protected = case.path.startswith("/v1/")
    anonymous = case.call(headers={})
    assert anonymous.status_code < 500, (anonymous.status_code, anonymous.text)
    if protected:
        assert anonymous.status_code >= 400, (anonymous.status_code, anonymous.text)
    other = case.call(headers={"Authorization": f"Bearer {API_KEYS['other']}"})
    assert other.status_code < 500, (other.status_code, other.text)
    if protected and which == "open" and "job_id" in (case.path_parameters or {}):
        assert other.status_code >= 400, (case.path, other.status_code, other.text)


def _png(size: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
images = st.one_of(
    st.just(PNG_URI),
    st.integers(1, len(PNG) - 1).map(lambda n: "data:image/png;base64," + base64.b64encode(PNG[:n]).decode()),
    st.binary(max_size=64).map(lambda b: "data:image/png;base64," + base64.b64encode(b).decode()),
    st.sampled_from(["data:", "data:image/png;base64,", "data:image/png;base64,!!!", "data:text/plain,hello",
                     "data:image/svg+xml;utf8,<svg/>", "file:///etc/passwd", "/etc/passwd", "../../x.png",
                     "http://127.0.0.1:1/x.png", "store://", "store://uploads/", "store://uploads/../x",
                     "store://tenants/other/uploads/x.png", "store://uploads/missing.png"]),
    st.text(max_size=30).map(lambda t: "store://uploads/" + t),
    st.text(max_size=30),
    json_values,
)
texts = st.one_of(st.text(max_size=30), st.sampled_from(["", "   ", "\x00", "a" * 500, "b" * 501]), json_values)
ids = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True), st.text(max_size=20),
                st.sampled_from(["../x", ".hidden", "-x", "a/b", "a" * 129, "fixed-id"]), json_values)
numbers = st.one_of(st.integers(-5, 100), st.floats(allow_nan=False, allow_infinity=False, width=32))
annotations = st.lists(st.fixed_dictionaries(
    {"label": texts},
    optional={"box": st.lists(numbers, max_size=5) | json_values,
              "polygon": st.lists(st.lists(numbers, max_size=3), max_size=5) | json_values,
              "score": json_values}), max_size=3) | json_values
fuzzed_items = st.fixed_dictionaries(
    {"image": images, "question": texts, "chosen": texts, "rejected": texts},
    optional={"id": ids, "annotations": annotations, "extra": json_values})
plain = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40).filter(str.strip)
boxes = st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(1, 8), st.integers(1, 8)).map(
    lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]])
valid_items = st.fixed_dictionaries(
    {"image": st.sampled_from([PNG_URI, *(("data:image/png;base64," + base64.b64encode(_png(n)).decode())
                                          for n in (1, 16, 33))]),
     "question": plain, "chosen": plain, "rejected": plain},
    optional={"id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True),
              "annotations": st.lists(st.fixed_dictionaries({"label": plain, "box": boxes}), max_size=2)})
one_field_off = st.tuples(valid_items, st.sampled_from(["image", "question", "chosen", "rejected", "id", "annotations",
                                                        "extra"]), images | texts | ids | annotations).map(
    lambda t: {**t[0], t[1]: t[2]})
items = st.one_of(valid_items, one_field_off, fuzzed_items, json_values)


@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HypothesisHealthCheck.function_scoped_fixture, HypothesisHealthCheck.too_slow,
                                 HypothesisHealthCheck.data_too_large])
@given(batch=st.lists(items, max_size=5))
def test_fuzzed_items_are_accepted_or_refused_with_a_reason(batch: list, platform: Platform,
                                                            jobs: dict[str, str]) -> None:
    url = f"{platform.gateway.url}/v1/jobs/{jobs['open']}/items"
    body = json.dumps({"items": batch})  # NaN / Infinity tokens included, as a sloppy client sends them
    r = httpx.post(url, content=body, headers={**platform.headers("acme"), "content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 200, (r.status_code, r.text, body[:2000])
    result = r.json()
    answered = sorted([a["index"] for a in result["accepted"]] + [e["index"] for e in result["rejected"]])
    assert answered == list(range(len(batch))), (result, body[:2000])
    assert all(isinstance(e["error"], str) and e["error"] for e in result["rejected"]), result
    for accepted in result["accepted"]:
        item = httpx.get(f"{url}/{accepted['id']}", headers=platform.headers("acme"), timeout=30)
        assert item.status_code == 200 and item.json()["status"] == "queued", item.text


def test_gateway_still_healthy_after_fuzzing(platform: Platform) -> None:
    with httpx.Client(base_url=platform.gateway.url, timeout=10) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        metrics = c.get("/metrics").text
    served = {}
    for line in metrics.splitlines():
        if line.startswith("mfpo_http_requests_total{"):
            status = line.split('status="')[1].split('"')[0]
            served[status] = served.get(status, 0) + float(line.rsplit(" ", 1)[1])
    print("requests by status:", dict(sorted(served.items())))
    assert sum(served.values()) > 300, served  # the fuzzers did send requests
    assert not [s for s in served if s.startswith("5")], served
    assert "Traceback" not in platform.gateway.log(), platform.gateway.log()[-5000:]
