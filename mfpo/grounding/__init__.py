"""Grounding: keyword phrases -> boxes with GroundingDINO or OWLv2 (transformers)."""

from mfpo.grounding.config import GroundingConfig
from mfpo.grounding.detector import KeywordBoxes, ZeroShotDetector, grounding_prompt

__all__ = ["GroundingConfig", "KeywordBoxes", "ZeroShotDetector", "grounding_prompt"]
