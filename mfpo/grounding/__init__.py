"""Grounding: keyword phrases -> boxes with GroundingDINO or OWLv2 (transformers).

The model code (torch, transformers) loads on first use of its names, so a config import stays light
(the gateway and CPU workers read these configs and never run the models).
"""

from typing import Any

from mfpo.grounding.config import GroundingConfig

__all__ = ["GroundingConfig", "KeywordBoxes", "ZeroShotDetector", "grounding_prompt"]

_LAZY = dict.fromkeys(("KeywordBoxes", "ZeroShotDetector", "grounding_prompt"), "mfpo.grounding.detector")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
