"""A real S3 endpoint for tests: ``python -m moto.server`` on a free loopback port.

Usage::

    with running_s3_server() as server:
        store = S3Store(server.config("my-bucket", create_bucket=True))
        ...
        server.stop()  # optional: simulate an outage; exiting the block also stops it

Tests that start subprocesses (gateway, worker) pass ``server.env()`` to them: the
``MFPO_S3_*`` variables :func:`mfpo.storage.factory.open_store` reads.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mfpo.storage.s3 import S3Config

HOST = "127.0.0.1"


@dataclass
class S3Server:
    """A running moto S3 server; moto accepts any credentials unless auth is switched on."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path
    access_key: str = "mfpo-test-key"
    secret_key: str = "mfpo-test-secret"
    region: str = "us-east-1"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def config(self, bucket: str, **options: Any) -> S3Config:
        """An :class:`S3Config` for ``bucket`` on this server (plain HTTP, fast-failing)."""
        from mfpo.storage.s3 import S3Config

        settings: dict[str, Any] = {
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "bucket": bucket,
            "secure": False,
            "region": self.region,
            "connect_timeout_s": 2.0,
            "read_timeout_s": 10.0,
            "max_retries": 1,
        }
        settings.update(options)
        return S3Config(**settings)

    def env(self) -> dict[str, str]:
        """The ``MFPO_S3_*`` environment variables that point ``open_store('s3://...')`` here."""
        return {
            "MFPO_S3_ENDPOINT": self.endpoint,
            "MFPO_S3_ACCESS_KEY": self.access_key,
            "MFPO_S3_SECRET_KEY": self.secret_key,
            "MFPO_S3_SECURE": "false",
            "MFPO_S3_REGION": self.region,
        }

    def log(self) -> str:
        """The server's stdout/stderr so far (for failure messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the server (idempotent): terminate, then kill if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_until_ready(server: S3Server, timeout_s: float) -> bool:
    """Poll moto's admin API until it answers; False if the process died first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{server.url}/moto-api/", timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise TimeoutError(
        f"moto server at {server.url} did not answer within {timeout_s:.0f} s:\n{server.log()}"
    )


@contextmanager
def running_s3_server(
    env: Mapping[str, str] | None = None, startup_timeout_s: float = 30.0, attempts: int = 3
) -> Iterator[S3Server]:
    """Start a moto S3 server on a free port, yield it once it answers over HTTP, stop it on exit.

    ``env`` adds environment variables for the server process, e.g.
    ``{"INITIAL_NO_AUTH_ACTION_COUNT": "0"}`` to make moto check credentials.
    A port grabbed by another process between choosing and binding is retried
    (``attempts`` times).
    """
    process_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with tempfile.TemporaryDirectory(prefix="mfpo-moto-") as tmp:
        log_path = Path(tmp, "moto.log")
        for attempt in range(1, attempts + 1):
            port = free_port()
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=process_env,
                )
            server = S3Server(endpoint=f"{HOST}:{port}", process=process, log_path=log_path)
            try:
                ready = _wait_until_ready(server, startup_timeout_s)
            except BaseException:
                server.stop()
                raise
            if ready:
                break
            server.stop()
            if attempt == attempts:
                raise RuntimeError(f"moto server failed to start after {attempts} attempts:\n{server.log()}")
        try:
            yield server
        finally:
            server.stop()
