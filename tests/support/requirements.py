"""One policy for what a test needs from the machine: in CI nothing is skipped.

``.ci/run`` installs every tool the suite uses (Redis, Chromium, docker-compose, the Python packages), so
under ``CI=true`` a missing one is a failure of the build, never a silent skip. On a developer's machine the
test is skipped with the reason and how to get the tool.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def missing(message: str) -> NoReturn:
    """Fail under CI, else skip, with ``message`` (what is missing and how to get it)."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: .ci/run installs it, so this is a broken build, not a skip)")
    pytest.skip(message)


def need_module(name: str, hint: str) -> ModuleType:
    """``import name``, or :func:`missing` with ``hint``."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"{name} cannot be imported ({exc}); {hint}")
