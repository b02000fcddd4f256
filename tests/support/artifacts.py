"""Where tests put what a person may want to look at afterwards (screenshots of the galleries).

``$MFPO_TEST_ARTIFACTS/<name>`` when set (CI can upload that folder), else ``<pytest basetemp>/<name>``
(pytest keeps the last three runs). :func:`artifact_dir` names the folder in the test output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

_ANNOUNCED = pytest.StashKey[set]()


def artifact_dir(request: Any, name: str) -> Path:
    """The artefact folder ``name`` (created); its path is printed on the terminal at the end of the run."""
    root = os.environ.get("MFPO_TEST_ARTIFACTS")
    base = Path(root) if root else request.config._tmp_path_factory.getbasetemp()
    folder = Path(base) / name
    folder.mkdir(parents=True, exist_ok=True)
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    announced = request.config.stash.setdefault(_ANNOUNCED, set())
    if reporter is not None and folder not in announced:
        announced.add(folder)
        request.config.add_cleanup(lambda: reporter.write_line(f"screenshots ({name}): {folder}"))
    return folder
