"""Headless Chromium for tests: Debian's ``chromium`` package driven by playwright.

Playwright's own browser download needs the internet; Debian's build does not
(``apt-get install -y chromium``). :func:`find_chromium` looks at ``$MFPO_CHROMIUM``,
then ``/usr/bin/chromium``, then ``chromium`` / ``chromium-browser`` on ``PATH``.
Without one, :func:`require_chromium` skips the test with the install command, or
fails it under ``CI=true`` (tests/support/requirements.py: in CI a skip must not pass quietly).

Pages are opened from ``file://`` URLs, or from a folder served on loopback by
:func:`serve_directory`, which records every request it answered.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.requirements import missing, need_module

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = "apt-get install -y chromium"


def find_chromium() -> str | None:
    """Path of a Chromium executable, or None."""
    candidates = [os.environ.get("MFPO_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                  shutil.which("chromium-browser")]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def require_chromium() -> str:
    """The Chromium path; skips the test (fails it in CI) when absent."""
    path = find_chromium()
    if path is not None:
        return path
    missing(f"no Chromium found (install it with `{INSTALL_HINT}` or set MFPO_CHROMIUM)")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless playwright ``Browser`` on the system Chromium; closed on exit."""
    executable = require_chromium()
    sync_api = need_module("playwright.sync_api", "pip install playwright (make install does)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Served:
    """A folder served over HTTP on 127.0.0.1, with the log of (path, status) answered."""

    url: str
    requests: list[tuple[str, int]] = field(default_factory=list)


@contextmanager
def serve_directory(root: Path) -> Iterator[Served]:
    """Serve ``root`` on a free loopback port for the duration of the block."""
    served = Served(url="")
    lock = threading.Lock()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            with lock:
                served.requests.append((self.path, int(code) if str(code).isdigit() else 0))

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    handler = functools.partial(Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


_LOAD_ALL_IMAGES = """
() => Promise.all(Array.from(document.images).map(img => {
    img.loading = 'eager';
    return img.decode().catch(() => null);  // resolves once loaded and decoded; failures stay visible
})).then(() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done))))
"""


def load_all_images(page: Any) -> None:
    """Make lazy images load now; return once every ``<img>`` has loaded (or failed) and is painted.

    A failed image is left for the caller to find (``naturalWidth == 0``). One evaluated
    function, no polling: ``wait_for_function`` evaluates strings, which a page's
    Content Security Policy without ``'unsafe-eval'`` refuses.
    """
    page.evaluate(_LOAD_ALL_IMAGES)
