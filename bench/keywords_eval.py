"""How often the top-K keywords name objects the image shows (MFPO reports 86%, sec. 4.6).

Two labelled sets, each judged per selected keyword:

* ``bench/data/keyword_gold.jsonl``: 40 hand-written answers in the style of LLaVA /
  RLHF-V chosen answers (meta words, negations, attributes, actions), each with the
  list of objects its image shows, labelled by us;
* ``mfpo synth`` scenes: the nouns of the objects actually drawn (``truth.jsonl``).

A keyword is correct when its core phrase or head noun names a listed object (lemma,
synonym or hypernym match, :mod:`mfpo.regions.matching` without the embedding step).
The MFPO ranking (multipartite graph + weighted PageRank) is compared in the same run
with two baselines over the same candidates: the first K noun phrases, and K drawn at
random (seeded). Prints ONE JSON line.

    python bench/keywords_eval.py [--top-k 3] [--synth-n 200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from mfpo.keywords import Candidate, KeywordConfig, get_embedder, rank_candidates, select_top_k
from mfpo.regions.matching import match_keyword
from mfpo.synth import SynthConfig, generate_scenes

GOLD = Path(__file__).resolve().parent / "data" / "keyword_gold.jsonl"
Selector = Callable[[list[Candidate], list[float], list[int], int, int], list[int]]


def mfpo_selector(cands: list[Candidate], scores: list[float], topics: list[int], k: int, seed: int) -> list[int]:
    return select_top_k(scores, k, topics)


def first_k_selector(cands: list[Candidate], scores: list[float], topics: list[int], k: int, seed: int) -> list[int]:
    return select_top_k([-c.first_position for c in cands], k, topics)


def random_selector(cands: list[Candidate], scores: list[float], topics: list[int], k: int, seed: int) -> list[int]:
    rng = np.random.Generator(np.random.PCG64(seed))
    return select_top_k(rng.random(len(cands)).tolist(), k, topics)


SELECTORS: dict[str, Selector] = {"mfpo": mfpo_selector, "first_k": first_k_selector, "random": random_selector}


def is_shown(keyword: str, objects: Sequence[str]) -> bool:
    """True if the keyword names one of the objects (lemma / synonym / hypernym)."""
    return bool(match_keyword(keyword, list(objects), embedder=None, threshold=1.0))


def evaluate(examples: list[tuple[str, list[str]]], top_k: int, config: KeywordConfig) -> dict:
    """Precision of the selected keywords and top-1 accuracy, per selector."""
    embedder = get_embedder()
    ranked = []
    t0 = time.perf_counter()
    for text, _ in examples:
        ranked.append(rank_candidates(text, config, embedder))
    seconds = time.perf_counter() - t0
    out: dict[str, dict] = {}
    misses: list[dict] = []
    for name, selector in SELECTORS.items():
        correct = total = top1 = answered = 0
        for i, ((text, objects), (cands, scores, topics)) in enumerate(zip(examples, ranked, strict=True)):
            if not cands:
                continue
            picked = selector(cands, scores, topics, top_k, i)
            hits = [is_shown(cands[j].text, objects) for j in picked]
            correct += sum(hits)
            total += len(hits)
            top1 += int(hits[0])
            answered += 1
            if name == "mfpo":
                misses.extend({"text": text[:80], "keyword": cands[j].text}
                              for j, h in zip(picked, hits, strict=True) if not h)
        out[name] = {"precision_at_k": round(correct / total, 4) if total else None,
                     "top1_accuracy": round(top1 / answered, 4) if answered else None,
                     "keywords": total}
    out["mfpo"]["ms_per_answer"] = round(1000 * seconds / max(1, len(examples)), 2)
    out["mfpo"]["misses"] = misses[:12]
    out["items"] = len(examples)
    out["items_without_candidates"] = sum(1 for c, _, _ in ranked if not c)
    return out


def gold_examples() -> list[tuple[str, list[str]]]:
    rows = [json.loads(line) for line in GOLD.read_text().splitlines() if line.strip()]
    return [(r["text"], r["objects"]) for r in rows]


def synth_examples(n: int, seed: int) -> list[tuple[str, list[str]]]:
    with tempfile.TemporaryDirectory() as tmp:
        items = generate_scenes(SynthConfig(n=n, seed=seed, width=128, height=128), Path(tmp))
        chosen = {json.loads(line)["id"]: json.loads(line)["chosen"] for line in items.read_text().splitlines()}
        truth = [json.loads(line) for line in (items.parent / "truth.jsonl").read_text().splitlines()]
    return [(chosen[t["id"]], t["nouns"]) for t in truth]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--top-k", type=int, default=3, help="K keywords per answer")
    parser.add_argument("--synth-n", type=int, default=200, help="synthetic scenes to judge")
    parser.add_argument("--seed", type=int, default=11, help="synth seed")
    args = parser.parse_args()
    config = KeywordConfig(top_k=args.top_k)
    gold = evaluate(gold_examples(), args.top_k, config)
    synth = evaluate(synth_examples(args.synth_n, args.seed), args.top_k, config)
    result = {
        "bench": "keywords_eval",
        "top_k": args.top_k,
        "paper_precision": 0.86,
        "gold": gold,
        "synth": synth,
        "mfpo_vs_first_k_ratio_gold": round(gold["mfpo"]["precision_at_k"] / gold["first_k"]["precision_at_k"], 3),
        "mfpo_vs_random_ratio_gold": round(gold["mfpo"]["precision_at_k"] / gold["random"]["precision_at_k"], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
