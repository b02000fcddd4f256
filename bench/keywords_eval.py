"""Keyword quality on real model-written image descriptions, with baselines (MFPO sec. 3.1).

Set: ``bench/data/keyword_dev.jsonl`` (built by ``bench/keywords_devset.py``): descriptions
of COCO val2014 photos written by LLaVA-1.5/LLaVA-13B, InstructBLIP, MiniGPT-4, mPLUG-Owl,
MultiModal-GPT and Shikra (POPE and OPERA releases), with CHAIR's ground-truth COCO objects
per photo; photos are split ``dev`` (tuning) / ``heldout`` (reported, never tuned on).

Each selected keyword is judged twice:

* **names a present object**: its last two words or its head noun map, through CHAIR's
  synonym table (``bench/data/chair_synonyms.json``), to a COCO category the photo holds;
* **is an object at all**: a COCO name counts as an object; any other head noun is looked
  up in ``bench/data/keyword_objectness.json`` (hand judgements, rule written there).
  Heads with no judgement are listed under ``unjudged`` and left out of the rate.

Metrics per selector: ``nonobject_rate`` (non-object keywords / judged keywords),
``top1_present`` (top-1 names a present object, over texts that name at least one present
object anywhere, CHAIR-style word matching), ``present_at_k`` (share of the K keywords that
name a present object). Selectors over the same filtered candidates: ``mfpo`` (the graph
and weighted PageRank, ``select_top_k``), ``first_k`` (first K candidates by position, one
per topic) and ``random`` (seeded). ``mfpo_minus_first_k`` gives paired-bootstrap 95%
intervals of the per-text differences. ``rank_change`` records how the paper's sender
normalisation changed the top-3 against the receiver normalisation the code used before.
Prints ONE JSON line.

    python bench/keywords_eval.py [--top-k 3] [--split dev|heldout|both] [--bootstrap 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from mfpo.keywords import Candidate, KeywordConfig, get_embedder, kind_probabilities, rank_candidates, select_top_k
from mfpo.keywords.candidates import tokenize
from mfpo.keywords.graph import build_graph
from mfpo.lexicon import lemma

DATA = Path(__file__).resolve().parent / "data"
Selector = Callable[[list[Candidate], list[float], list[int], int, int], list[int]]


def mfpo_selector(cands: list[Candidate], scores: list[float], topics: list[int], k: int, seed: int) -> list[int]:
    return select_top_k(scores, k, topics)


def first_k_selector(cands: list[Candidate], scores: list[float], topics: list[int], k: int, seed: int) -> list[int]:
    return select_top_k([-c.first_position for c in cands], k, topics)


def random_selector(cands: list[Candidate], scores: list[float], topics: list[int], k: int, seed: int) -> list[int]:
    rng = np.random.Generator(np.random.PCG64(seed))
    return select_top_k(rng.random(len(cands)).tolist(), k, topics)


SELECTORS: dict[str, Selector] = {"mfpo": mfpo_selector, "first_k": first_k_selector, "random": random_selector}


class Judge:
    """CHAIR category and objectness of a keyword or a text."""

    def __init__(self, data: Path = DATA) -> None:
        self.synonyms: dict[str, str] = json.loads((data / "chair_synonyms.json").read_text())
        judged = json.loads((data / "keyword_objectness.json").read_text())
        self.objects = set(judged["object"])
        self.non_objects = set(judged["not_object"])
        overlap = self.objects & self.non_objects
        if overlap:
            raise ValueError(f"judged both object and not: {sorted(overlap)}")

    def category(self, phrase: str) -> str | None:
        """COCO category of a phrase by its last two words, else its head ('' = CHAIR non-object)."""
        words = [w for w in phrase.lower().split() if w]
        if not words:
            return None
        last = words[-1]
        singulars = [last, lemma(last), last[:-1] if last.endswith("s") else last]
        forms = [" ".join([*words[-2:-1], s]) for s in singulars] if len(words) > 1 else []
        for form in [*forms, *singulars]:
            if form in self.synonyms:
                return self.synonyms[form] or None
        return None

    def is_object(self, phrase: str) -> bool | None:
        """True / False by COCO name or hand judgement of the head lemma; None if unjudged."""
        if self.category(phrase):
            return True
        head = lemma(phrase.split()[-1])
        if head in self.objects:
            return True
        if head in self.non_objects:
            return False
        return None

    def text_categories(self, text: str) -> set[str]:
        """COCO categories a text names (CHAIR-style: two-word names first, then single words)."""
        words = [w.lower() for w in tokenize(text) if w[:1].isalpha()]
        out, i = set(), 0
        while i < len(words):
            pair = " ".join(words[i : i + 2]) if i + 1 < len(words) else ""
            pair_lemma = f"{words[i]} {lemma(words[i + 1])}" if pair else ""
            if pair and (pair in self.synonyms or pair_lemma in self.synonyms):
                name = self.synonyms.get(pair) or self.synonyms.get(pair_lemma) or ""
                if name:
                    out.add(name)
                i += 2
                continue
            name = self.synonyms.get(words[i]) or self.synonyms.get(lemma(words[i]))
            if name:
                out.add(name)
            i += 1
        return out


def load_rows(split: str, data: Path = DATA) -> list[dict]:
    rows = [json.loads(line) for line in (data / "keyword_dev.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if split == "both" or r["split"] == split]


def receiver_normalized_scores(omega: np.ndarray, alpha: float, prior: np.ndarray, iters: int = 200) -> np.ndarray:
    """The ranking the code had before: omega_ij divided by row j's sum (what j receives).

    Same restart prior as the current ranking; iterated a fixed number of times and
    rescaled each step (it need not converge); only its order is used, for ``rank_change``.
    """
    row = omega.sum(axis=1)
    p = np.divide(omega, row[None, :], out=np.zeros_like(omega), where=row[None, :] > 0)
    restart = (1.0 - alpha) * prior
    r = restart.copy()
    for _ in range(iters):
        r = restart + alpha * (p @ r)
        r = r / max(1.0, float(np.abs(r).max()))
    return r


def bootstrap_ci(diffs: Sequence[float], n_boot: int, seed: int) -> list[float]:
    """Percentile 95% interval of the mean of paired differences."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.Generator(np.random.PCG64(seed))
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def evaluate(rows: list[dict], config: KeywordConfig, judge: Judge, n_boot: int) -> dict:
    embedder = get_embedder()
    t0 = time.perf_counter()
    ranked = [rank_candidates(r["text"], config, embedder) for r in rows]
    seconds = time.perf_counter() - t0
    out: dict = {"items": len(rows), "ms_per_answer": round(1000 * seconds / max(1, len(rows)), 1)}
    per_item: dict[str, dict[str, list[float]]] = {}
    unjudged: Counter[str] = Counter()
    nonobject_examples: Counter[str] = Counter()
    k = config.top_k
    for name, selector in SELECTORS.items():
        judged = nonobj = kw_total = kw_present = 0
        top1, present_k = [], []
        for i, (row, (cands, scores, topics)) in enumerate(zip(rows, ranked, strict=True)):
            present = set(row["objects"])
            names_present = bool(judge.text_categories(row["text"]) & present)
            picked = selector(cands, scores, topics, k, i) if cands else []
            hits = [judge.category(cands[j].text) in present for j in picked]
            for j in picked:
                verdict = judge.is_object(cands[j].text)
                if verdict is None:
                    unjudged[lemma(cands[j].text.split()[-1])] += 1
                    continue
                judged += 1
                if not verdict:
                    nonobj += 1
                    if name == "mfpo":
                        nonobject_examples[cands[j].text] += 1
            kw_total += len(picked)
            kw_present += sum(hits)
            present_k.append(sum(hits) / k)
            if names_present:
                top1.append(float(bool(hits) and hits[0]))
        per_item[name] = {"top1": top1, "present_k": present_k}
        out[name] = {
            "nonobject_rate": round(nonobj / judged, 4) if judged else None,
            "top1_present": round(float(np.mean(top1)), 4) if top1 else None,
            "present_at_k": round(kw_present / kw_total, 4) if kw_total else None,
            "keywords": kw_total,
            "texts_naming_a_present_object": len(top1),
        }
    out["mfpo_minus_first_k"] = {
        metric: {
            "mean": round(float(np.mean(np.subtract(per_item["mfpo"][metric], per_item["first_k"][metric]))), 4),
            "ci95": bootstrap_ci(np.subtract(per_item["mfpo"][metric], per_item["first_k"][metric]), n_boot, 7),
        }
        for metric in ("top1", "present_k")
    }
    out["ablations"] = ablations(rows, config, judge, embedder)
    out["mfpo_nonobject_keywords"] = [w for w, _ in nonobject_examples.most_common(15)]
    out["unjudged_heads"] = dict(unjudged.most_common())
    out["rank_change"] = rank_change(rows, ranked, config, embedder)
    out["items_without_candidates"] = sum(1 for c, _, _ in ranked if not c)
    return out


def ablations(rows: list[dict], config: KeywordConfig, judge: Judge, embedder: object) -> dict:
    """top1_present / present_at_k of the ranking with one of our additions switched off."""
    variants = {
        "no_objectness_prior": config.model_copy(update={"objectness_prior": False}),
        "no_objectness_filter": config.model_copy(update={"min_objectness": 0.0}),
        "paper_damping_0.85": config.model_copy(update={"alpha_page": 0.85}),
    }
    out = {}
    for name, cfg in variants.items():
        top1, hits_total, kw_total = [], 0, 0
        for row in rows:
            cands, scores, topics = rank_candidates(row["text"], cfg, embedder)  # type: ignore[arg-type]
            present = set(row["objects"])
            picked = select_top_k(scores, cfg.top_k, topics) if cands else []
            hits = [judge.category(cands[j].text) in present for j in picked]
            hits_total, kw_total = hits_total + sum(hits), kw_total + len(picked)
            if judge.text_categories(row["text"]) & present:
                top1.append(float(bool(hits) and hits[0]))
        out[name] = {"top1_present": round(float(np.mean(top1)), 4), "present_at_k": round(hits_total / kw_total, 4)}
    return out


def rank_change(rows: list[dict], ranked: list, config: KeywordConfig, embedder: object) -> dict:
    """How often the top-K under the sender normalisation differs from the receiver one."""
    same_set = same_order = n = 0
    for row, (cands, scores, topics) in zip(rows, ranked, strict=True):
        if not cands:
            continue
        vectors = embedder.embed([c.lemma for c in cands])  # type: ignore[attr-defined]
        omega, _ = build_graph(cands, vectors, len(tokenize(row["text"])), config)
        kinds = kind_probabilities([c.head for c in cands], embedder)  # type: ignore[arg-type]
        prior = kinds[:, 0] + config.stuff_weight * kinds[:, 1] if config.objectness_prior else np.ones(len(cands))
        old = receiver_normalized_scores(omega, config.alpha_page, prior)
        new_top = select_top_k(scores, config.top_k, topics)
        old_top = select_top_k(old.tolist(), config.top_k, topics)
        n += 1
        same_set += set(new_top) == set(old_top)
        same_order += new_top == old_top
    return {
        "texts": n,
        "same_top_k_set": round(same_set / max(1, n), 4),
        "same_top_k_order": round(same_order / max(1, n), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top-k", type=int, default=3, help="K keywords per answer")
    parser.add_argument("--split", choices=("dev", "heldout", "both"), default="both")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="folder with keyword_dev.jsonl, chair_synonyms.json, keyword_objectness.json")
    args = parser.parse_args()
    config = KeywordConfig(top_k=args.top_k)
    judge = Judge(args.data)
    splits = ("dev", "heldout") if args.split == "both" else (args.split,)
    result = {"bench": "keywords_eval", "top_k": args.top_k, "paper_precision": 0.86}
    for split in splits:
        result[split] = evaluate(load_rows(split, args.data), config, judge, args.bootstrap)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
