"""Object-store contract, run against the local folder and a real S3 server (moto over HTTP)."""

from __future__ import annotations

import itertools
import os
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import urllib3
from minio.error import S3Error
from pydantic import SecretStr
from support.s3_server import S3Server, free_port, running_s3_server

from mfpo.config import UnknownOptionError
from mfpo.storage.base import InvalidKey, ObjectNotFound, ObjectStore, StoreError, StoreUnavailable, check_key
from mfpo.storage.factory import open_store
from mfpo.storage.local import LocalStore
from mfpo.storage.s3 import S3Config, S3Store, classify_error

BINARY = bytes(range(256)) * 64 + b"\x00\xff\r\n"  # 16 KiB + 4 bytes, every byte value
INVALID_KEYS = ["../x", "/abs", "a//b", "a\\b", "a/../b", "", "a/", "./a", "sp ace"]
_bucket_ids = itertools.count()


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


def new_bucket() -> str:
    return f"test-bucket-{os.getpid()}-{next(_bucket_ids)}"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server: S3Server = request.getfixturevalue("s3_server")
    return S3Store(server.config(new_bucket(), create_bucket=True))


# --- the contract, for every store ---------------------------------------------------------------


def test_put_get_round_trip_is_byte_exact(store: ObjectStore) -> None:
    store.put("chosen/ab12-cd34.png", BINARY, content_type="image/png")
    store.put("empty.bin", b"")
    assert store.get("chosen/ab12-cd34.png") == BINARY
    assert store.get("empty.bin") == b""


def test_exists(store: ObjectStore) -> None:
    assert not store.exists("items/a.json")
    store.put("items/a.json", b"{}")
    assert store.exists("items/a.json")
    assert not store.exists("items")  # a "folder" is not an object
    assert not store.exists("items/a.jso")


def test_list_filters_by_prefix_in_lexicographic_order(store: ObjectStore) -> None:
    for key in ["b/2", "a/2", "ab", "a/10", "a/1", "results/x.json"]:
        store.put(key, key.encode())
    assert list(store.list("a/")) == ["a/1", "a/10", "a/2"]
    assert list(store.list("a")) == ["a/1", "a/10", "a/2", "ab"]
    assert list(store.list()) == ["a/1", "a/10", "a/2", "ab", "b/2", "results/x.json"]
    assert list(store.list("zzz")) == []


def test_delete_removes_and_tolerates_missing(store: ObjectStore) -> None:
    store.put("a/b", b"1")
    store.put("a/c", b"2")
    store.delete("a/b")
    assert not store.exists("a/b")
    assert list(store.list()) == ["a/c"]
    store.delete("a/b")  # already gone: no error
    store.delete("never/existed")


def test_overwrite_replaces_content(store: ObjectStore) -> None:
    store.put("k", b"first version, longer")
    store.put("k", b"second")
    assert store.get("k") == b"second"
    assert list(store.list()) == ["k"]


def test_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match=r"nope/x\.png"):
        store.get("nope/x.png")
    with pytest.raises(KeyError):  # ObjectNotFound is also a KeyError
        store.get("nope")


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_rejected_by_every_operation(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put(key, b"x")
    with pytest.raises(InvalidKey):
        store.get(key)
    with pytest.raises(InvalidKey):
        store.exists(key)
    with pytest.raises(InvalidKey):
        store.delete(key)
    with pytest.raises(InvalidKey):
        store.url(key)
    assert list(store.list()) == []


def test_url_serves_the_bytes(store: ObjectStore) -> None:
    store.put("rejected/r1.png", BINARY, content_type="image/png")
    url = store.url("rejected/r1.png", expires=timedelta(minutes=5))
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == BINARY


# --- S3-specific --------------------------------------------------------------------------------


def test_s3_missing_bucket_fails_at_construction(s3_server: S3Server) -> None:
    with pytest.raises(
        StoreError, match=r"bucket 'no-such-bucket' does not exist at endpoint http://.*create"
    ):
        S3Store(s3_server.config("no-such-bucket"))


def test_s3_create_bucket_creates_it(s3_server: S3Server) -> None:
    bucket = new_bucket()
    S3Store(s3_server.config(bucket, create_bucket=True))
    assert S3Store(s3_server.config(bucket)).client.bucket_exists(bucket)
    S3Store(s3_server.config(bucket, create_bucket=True))  # already there: no error


def test_s3_prefix_namespaces_keys_inside_the_bucket(s3_server: S3Server) -> None:
    bucket = new_bucket()
    outer = S3Store(s3_server.config(bucket, create_bucket=True))
    inner = S3Store(s3_server.config(bucket, prefix="/runs/r1/"))
    inner.put("items/a.json", b"{}", content_type="application/json")
    outer.put("other/b.json", b"[]")
    assert list(outer.list()) == ["other/b.json", "runs/r1/items/a.json"]
    assert list(inner.list()) == ["items/a.json"]
    assert inner.object_name("items/a.json") == "runs/r1/items/a.json"
    assert outer.client.stat_object(bucket, "runs/r1/items/a.json").content_type == "application/json"
    assert not inner.exists("other/b.json")


def test_s3_stopped_server_gives_store_unavailable_quickly() -> None:
    with running_s3_server() as server:
        store = S3Store(server.config(new_bucket(), create_bucket=True, connect_timeout_s=1.0))
        store.put("a", b"1")
        server.stop()
        for operation in (lambda: store.put("b", b"2"), lambda: store.get("a"), lambda: list(store.list())):
            start = time.monotonic()
            with pytest.raises(StoreUnavailable, match="unreachable"):
                operation()
            assert time.monotonic() - start < 30


def test_s3_closed_port_fails_at_construction_quickly() -> None:
    config = S3Config(endpoint=f"127.0.0.1:{free_port()}", bucket="abc", secure=False, max_retries=2)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="check bucket 'abc'"):
        S3Store(config)
    assert time.monotonic() - start < 30


def test_s3_refused_credentials_give_a_clear_non_transient_error() -> None:
    with running_s3_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as server:  # moto checks credentials
        with pytest.raises(StoreError, match=r"AccessDenied.*HTTP 403.*secret_key") as info:
            S3Store(server.config("abc"))
        assert not isinstance(info.value, StoreUnavailable)


def _s3_error(code: str, status: int) -> S3Error:
    response = urllib3.HTTPResponse(body=b"", status=status)
    return S3Error(response, code, f"{code} message", "/b/k", "req-1", "host-1", "b", "k")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SlowDown", 503, StoreUnavailable),
        ("InternalError", 500, StoreUnavailable),
        ("RequestTimeout", 400, StoreUnavailable),
        ("SomethingNew", 502, StoreUnavailable),
        ("AccessDenied", 403, StoreError),
        ("NoSuchKey", 404, ObjectNotFound),
    ],
)
def test_classify_error_maps_s3_codes(code: str, status: int, expected: type[StoreError]) -> None:
    error = classify_error(_s3_error(code, status), "get 'k'")
    assert type(error) is expected
    assert str(error).startswith("get 'k'")


def test_classify_error_maps_network_errors_to_unavailable() -> None:
    error = classify_error(urllib3.exceptions.ProtocolError("Connection aborted."), "get 'k'")
    assert isinstance(error, StoreUnavailable)


def test_s3_config_validates_options() -> None:
    with pytest.raises(ValueError, match="without scheme"):
        S3Config(endpoint="http://localhost:9000")
    with pytest.raises(ValueError, match="invalid bucket name 'ab'"):
        S3Config(bucket="ab")
    with pytest.raises(ValueError, match="invalid bucket name 'My_Bucket'"):
        S3Config(bucket="My_Bucket")
    with pytest.raises(ValueError, match=r"object key 'runs/\.\./x' is not allowed"):
        S3Config(prefix="runs/../x")
    with pytest.raises(UnknownOptionError, match=r"valid options: .*secret_key"):
        S3Config(secret="x")  # type: ignore[call-arg]
    config = S3Config(secret_key=SecretStr("hunter2"), prefix="/runs/a/")
    assert config.prefix == "runs/a"
    assert "hunter2" not in repr(config)
    assert set(S3Config.help()) >= {"endpoint", "access_key", "secret_key", "bucket", "create_bucket"}
    assert all(S3Config.help().values())


def test_s3_url_rejects_out_of_range_expiry(s3_server: S3Server) -> None:
    store = S3Store(s3_server.config(new_bucket(), create_bucket=True))
    with pytest.raises(ValueError, match="between 1 second and 7 days"):
        store.url("k", expires=timedelta(days=8))


# --- LocalStore-specific ------------------------------------------------------------------------


def test_local_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for i in range(5):
        store.put(f"d/k{i}.png", BINARY)
        store.put("d/k0.png", b"overwritten")
    with pytest.raises(TypeError):
        store.put("d/broken.png", "not bytes")  # type: ignore[arg-type]  # the write itself fails
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [f"d/k{i}.png" for i in range(5)]
    assert store.get("d/k0.png") == b"overwritten"


def test_local_path_traversal_cannot_escape_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = LocalStore(root)
    for key in ["../escaped", "../../escaped", "/tmp/escaped", "a/../../escaped", "..\\escaped"]:
        with pytest.raises(InvalidKey):
            store.put(key, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert list(root.iterdir()) == []
    assert store.path("a/b.png") == root.resolve() / "a" / "b.png"


# --- open_store ---------------------------------------------------------------------------------


def test_open_store_local_forms(tmp_path: Path) -> None:
    uris: list[str | Path] = [str(tmp_path / "plain"), (tmp_path / "plain").as_uri(), tmp_path / "plain"]
    for uri in uris:
        store = open_store(uri)
        assert isinstance(store, LocalStore)
        assert store.root == (tmp_path / "plain").resolve()


def test_open_store_s3_reads_environment(s3_server: S3Server) -> None:
    bucket = new_bucket()
    store = open_store(f"s3://{bucket}/runs/r2", create_bucket=True, environ=s3_server.env())
    assert isinstance(store, S3Store)
    assert store.config.prefix == "runs/r2"
    assert store.config.secure is False
    assert store.config.secret_key.get_secret_value() == s3_server.secret_key
    store.put("x", b"1")
    assert S3Store(s3_server.config(bucket)).get("runs/r2/x") == b"1"


def test_open_store_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="MFPO_S3_ENDPOINT"):
        open_store("s3://bucket/p", environ={})
    with pytest.raises(ValueError, match="MFPO_S3_SECURE='maybe' is not a boolean"):
        open_store("s3://bucket", environ={"MFPO_S3_ENDPOINT": "localhost:1", "MFPO_S3_SECURE": "maybe"})
    with pytest.raises(ValueError, match="has no bucket"):
        open_store("s3:///p", environ={"MFPO_S3_ENDPOINT": "localhost:1"})
    with pytest.raises(ValueError, match="unsupported store URI scheme 'gs'"):
        open_store("gs://bucket/p")
    with pytest.raises(ValueError, match="names host"):
        open_store("file://server/share")


def test_s3_presigned_urls_name_the_public_endpoint(s3_server: S3Server) -> None:
    """Behind an ingress (here a TCP proxy) the store's URLs name the address clients reach it at; presigning
    sends no request (it works while that address is down), and the URL then serves the bytes."""
    from support.proxy import tcp_proxy

    bucket = new_bucket()
    with tcp_proxy(s3_server.endpoint) as proxy:
        config = s3_server.config(bucket, create_bucket=True).model_copy(
            update={"public_endpoint": proxy.endpoint, "public_secure": False})
        store = S3Store(config)
        store.put("rejected/r1.png", BINARY, content_type="image/png")
        proxy.set_down(True)
        url = store.url("rejected/r1.png", expires=timedelta(minutes=5))
        assert url.startswith(f"http://{proxy.endpoint}/{bucket}/rejected/r1.png?")
        proxy.set_down(False)
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == BINARY
    secure = S3Config(public_endpoint="s3.example.com", secure=False)
    assert secure.public_secure is None  # follows `secure` unless given
    with pytest.raises(ValueError, match="host:port"):
        S3Config(public_endpoint="https://s3.example.com")


def test_local_list_walks_only_the_prefix_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A LIST of one job's prefix must not walk the whole store (every tenant, every job)."""
    import os

    store = LocalStore(tmp_path)
    for key in ("tenants/a/jobs/j1/chunks/0.json", "tenants/a/jobs/j1/chunks/1.json", "tenants/a/jobs/j2/x.json",
                "index/active/a/j1", "top.json"):
        store.put(key, b"1")
    walked: list[str] = []
    real_walk = os.walk

    def recording_walk(top, *args, **kwargs):  # type: ignore[no-untyped-def]
        walked.append(str(top))
        return real_walk(top, *args, **kwargs)

    monkeypatch.setattr(os, "walk", recording_walk)
    assert list(store.list("tenants/a/jobs/j1/chunks/")) == ["tenants/a/jobs/j1/chunks/0.json",
                                                               "tenants/a/jobs/j1/chunks/1.json"]
    assert walked == [str(tmp_path.resolve() / "tenants" / "a" / "jobs" / "j1" / "chunks")]
    assert list(store.list("tenants/a/jobs/j1/chunks/", start_after="tenants/a/jobs/j1/chunks/0.json")) == [
        "tenants/a/jobs/j1/chunks/1.json"]
    assert list(store.list("index/act")) == ["index/active/a/j1"]
    assert list(store.list("nothing/here/")) == []


def test_range_reads_copies_and_file_puts(tmp_path: Path, s3_server: S3Server) -> None:
    for store in (LocalStore(tmp_path / "local"), S3Store(s3_server.config(new_bucket(), create_bucket=True))):
        store.put("a/b.bin", bytes(range(200)))
        assert store.get_range("a/b.bin", 10, 5) == bytes(range(10, 15))
        assert store.get_range("a/b.bin", 195, 50) == bytes(range(195, 200))
        store.copy("a/b.bin", "c/d.bin")
        assert store.get("c/d.bin") == bytes(range(200))
        source = tmp_path / "big.bin"
        source.write_bytes(b"x" * 300_000)
        store.put_file("e/f.bin", source)
        assert store.get("e/f.bin") == b"x" * 300_000
        with pytest.raises(ObjectNotFound):
            store.get_range("missing", 0, 1)


@pytest.mark.parametrize("bad", ["a\n", "a/b\n", "\n", "a/\nb"])
def test_a_trailing_or_embedded_newline_is_not_a_key(bad: str) -> None:
    """``re.match`` with ``$`` accepts "x\\n": keys and ids are checked with fullmatch."""
    from mfpo.ids import check_safe_id

    with pytest.raises(InvalidKey):
        check_key(bad)
    with pytest.raises(ValueError):
        check_safe_id(bad)
