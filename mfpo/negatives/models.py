"""The constructors' models, loaded once per process and reused (as :func:`mfpo.regions.grounded.get_grounded_provider`
does for grounding + SAM).

Keys are the settings that decide the loaded object (path, device, dtype and the like), so two jobs with
the same deployment share one copy; a worker that serves several jobs loads each model once.
"""

from __future__ import annotations

import threading
from typing import Any

from mfpo.negatives.clip_score import ClipScorer
from mfpo.negatives.config import AdavipConfig, ClipScoreConfig, MbpoConfig, NegativesConfig
from mfpo.negatives.inpaint import Inpainter

_MODELS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def _cached(kind: str, key: str, build: Any) -> Any:
    with _LOCK:
        if (kind, key) not in _MODELS:
            _MODELS[(kind, key)] = build()
        return _MODELS[(kind, key)]


def get_clip_scorer(config: ClipScoreConfig) -> ClipScorer:
    """The process-wide :class:`~mfpo.negatives.clip_score.ClipScorer` for these settings."""
    scorer: ClipScorer = _cached("clip", config.model_dump_json(), lambda: ClipScorer(config))  # all deployment
    return scorer


def get_inpainter(config: AdavipConfig) -> Inpainter:
    """The process-wide inpainter of ``config.inpainter``: the diffusers pipeline (loaded once) or the fill."""
    if config.inpainter == "diffusers":
        from mfpo.negatives.diffusers_inpaint import DiffusersInpainter

        assert config.diffusers is not None  # AdavipConfig's validator
        from mfpo.negatives.diffusers_inpaint import load_pipeline

        settings = config.diffusers
        key = f"{settings.model_path}|{settings.device}|{settings.dtype}"
        pipe = _cached("diffusers", key, lambda: load_pipeline(settings.model_path, settings.device, settings.dtype))
        return DiffusersInpainter(settings, pipe)
    from mfpo.negatives.fill import FillInpainter

    return FillInpainter(config.fill)


def get_attacker(config: MbpoConfig) -> Any:
    """The process-wide :class:`~mfpo.negatives.mbpo.LlavaAttacker` (the policy) of ``model_path`` on ``device`` in
    ``dtype``: the attack settings are passed per call, so they never reload the model."""
    from mfpo.negatives.mbpo import LlavaAttacker

    assert config.model_path is not None  # NegativesConfig's validator
    path = config.model_path
    return _cached("mbpo", f"{path}|{config.device}|{config.dtype}", lambda: LlavaAttacker(path, config.device,
                                                                                          config.dtype))


def load_models(config: NegativesConfig) -> None:
    """Load (once per process) every model the kinds of ``config`` use, so a bad path or a wrong architecture
    fails at start-up rather than on the first item (OSError / ValueError from the loaders)."""
    if "adavip" in config.kinds:
        assert config.adavip.clip is not None  # NegativesConfig's validator
        get_clip_scorer(config.adavip.clip)
        get_inpainter(config.adavip)
    if "mbpo" in config.kinds:
        get_attacker(config.mbpo)


def loaded_models() -> list[tuple[str, str]]:
    """(kind, settings JSON) of every model this process holds (for tests and diagnostics)."""
    with _LOCK:
        return list(_MODELS)


def release_models() -> None:
    """Drop every cached model (tests; a worker never needs to)."""
    with _LOCK:
        _MODELS.clear()
