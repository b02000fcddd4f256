"""The trainer: MFPO and sibling preference losses for LLaVA-class models (imports ``mfpo``, never the reverse)."""
