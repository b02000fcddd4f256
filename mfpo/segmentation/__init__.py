"""Segmentation: box prompts -> masks with segment-anything (SAM), batched across images."""

from mfpo.segmentation.config import SamConfig
from mfpo.segmentation.sam import ModelLoadError, SamSegmenter, load_sam

__all__ = ["ModelLoadError", "SamConfig", "SamSegmenter", "load_sam"]
