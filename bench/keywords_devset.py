"""Build the real-text keyword development set (bench/data/keyword_dev.jsonl) from public sources.

The texts are image descriptions written by multimodal models about COCO val2014 photos,
published with two hallucination benchmarks:

* POPE (github AoiDragon/POPE, ``caption_data/Instruction{1,2}_{model}.json``): LLaVA-13B,
  InstructBLIP, MiniGPT-4, mPLUG-Owl and MultiModal-GPT answering "Provide a brief
  description of the given image." / "Generate a short caption of the image.";
* OPERA (github shikiw/OPERA, ``log/chair_eval_results/{model}/greedy.jsonl``): LLaVA-1.5-7B,
  InstructBLIP, MiniGPT-4 and Shikra greedy answers to "Please describe this image in detail."

The object ground truth of each photo is CHAIR's (Rohrbach et al. 2018): the COCO
categories in the photo's instance annotations and reference captions, as cached in
``chair.pkl`` of github Maxlinn/CHAIR-metric-standalone (read with an unpickler that only
admits dicts, lists, sets and a stub for the cache class). The same cache holds CHAIR's
synonym table (word or two-word phrase -> COCO category; '' for CHAIR's
non-objects 'home plate' and 'train track'), written to ``bench/data/chair_synonyms.json`` for
the scorer.

Sampling: ``--per-file`` answers of at least 3 words from each source file, drawn with a
fixed seed; photos (not answers) are split into ``dev`` (60%) and ``heldout`` (40%) by a
hash of the COCO id, so no photo is in both. LLaVA-Bench's COCO answers (LLaVA's 30x3 QA
file) are kept out: they are the blind check.

    python bench/keywords_devset.py --pope DIR --opera DIR --chair-pkl FILE
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import pickle
import random
import subprocess
from pathlib import Path
from typing import ClassVar

DATA = Path(__file__).resolve().parent / "data"
POPE_MODELS = ("llava", "instructblip", "minigpt-4", "mplug", "mmgpt")
OPERA_MODELS = ("llava-1.5", "instructblip", "minigpt4", "shikra")


class _ChairCache:
    """Stand-in for CHAIR's evaluator class: only its attribute dict is read."""


class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED: ClassVar[dict[tuple[str, str], type]] = {
        ("collections", "defaultdict"): collections.defaultdict,
        ("builtins", "list"): list,
        ("builtins", "set"): set,
        ("builtins", "dict"): dict,
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("__main__", "CHAIR"):
            return _ChairCache
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_git_file(repo: Path, path: str) -> tuple[str, str]:
    """(text, commit) of ``path`` at HEAD of a bare or normal git directory."""
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    text = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True, text=True, check=True)
    return text.stdout, commit.stdout.strip()


def json_objects(text: str) -> list[dict]:
    """Every JSON object of a file of concatenated (pretty-printed or line-wise) objects."""
    decoder, i, out = json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)


def split_of(image_id: int) -> str:
    return "heldout" if int(hashlib.sha1(str(image_id).encode()).hexdigest(), 16) % 10 < 4 else "dev"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pope", type=Path, required=True, help="git directory of AoiDragon/POPE")
    parser.add_argument("--opera", type=Path, required=True, help="git directory of shikiw/OPERA")
    parser.add_argument("--chair-pkl", type=Path, required=True, help="CHAIR's chair.pkl cache")
    parser.add_argument("--per-file", type=int, default=40, help="answers drawn from each source file")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=DATA, help="folder to write the set and the synonym table to")
    args = parser.parse_args()

    with args.chair_pkl.open("rb") as f:
        cache = _SafeUnpickler(f).load().__dict__
    truth = {int(k): sorted(v) for k, v in cache["imid_to_objects"].items()}
    inverse = cache["inverse_synonym_dict"]
    synonyms = {k.strip(): v for k, v in inverse.items() if k.strip()}
    # CHAIR's two-word names: "baby dog" -> dog, "toilet seat" -> toilet; "home plate" and
    # "train track" map to no category (CHAIR keeps them from counting as plate / train).
    for phrase, name in cache["double_word_dict"].items():
        synonyms.setdefault(phrase.strip(), inverse.get(name, ""))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chair_synonyms.json").write_text(json.dumps(dict(sorted(synonyms.items())), indent=0) + "\n")

    sources: list[tuple[str, str, Path, str]] = []
    for inst in (1, 2):
        for model in POPE_MODELS:
            sources.append(("POPE", model, args.pope, f"caption_data/Instruction{inst}_{model}.json"))
    for model in OPERA_MODELS:
        sources.append(("OPERA", model, args.opera, f"log/chair_eval_results/{model}/greedy.jsonl"))

    rng = random.Random(args.seed)
    rows, seen = [], set()
    for bench, model, repo, path in sources:
        text, commit = read_git_file(repo, path)
        objs = json_objects(text)
        pool = []
        for o in objs:
            answer = (o.get("text") or o.get("caption") or "").strip()
            image_id = int(o["image_id"])
            if len(answer.split()) < 3 or image_id not in truth or (image_id, answer) in seen:
                continue
            pool.append((image_id, answer))
        for image_id, answer in rng.sample(pool, min(args.per_file, len(pool))):
            seen.add((image_id, answer))
            rows.append(
                {
                    "id": f"{bench.lower()}-{model}-{hashlib.sha1(answer.encode()).hexdigest()[:10]}",
                    "split": split_of(image_id),
                    "source": {"benchmark": bench, "model": model, "repo_path": path, "commit": commit},
                    "coco_id": image_id,
                    "text": answer,
                    "objects": truth[image_id],
                }
            )
    with (args.out / "keyword_dev.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    counts = collections.Counter((r["split"], r["source"]["benchmark"]) for r in rows)
    by_source = {f"{a}/{b}": n for (a, b), n in sorted(counts.items())}
    print(json.dumps({"rows": len(rows), "by_split_and_source": by_source}))


if __name__ == "__main__":
    main()
