"""Segmentation: box prompts -> masks with segment-anything (SAM), batched across images.

The model code (torch, transformers) loads on first use of its names, so a config import stays light
(the gateway and CPU workers read these configs and never run the models).
"""

from typing import Any

from mfpo.segmentation.config import SamConfig

__all__ = ["ModelLoadError", "SamConfig", "SamSegmenter", "load_sam"]

_LAZY = dict.fromkeys(("ModelLoadError", "SamSegmenter", "load_sam"), "mfpo.segmentation.sam")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
