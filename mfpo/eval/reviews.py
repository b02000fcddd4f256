"""Asking a judge about many items, resumably: replies are cached in a JSON Lines file.

Each cached line holds the item id, a hash of the exact messages sent, and the reply. A rerun
asks the judge only for items whose id is new or whose messages changed (a new answer, a new
rubric), so an interrupted MMHal-Bench or LLaVA-Bench scoring run resumes for free.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from mfpo.eval.judge import Judge, Message


def messages_hash(messages: Sequence[Message]) -> str:
    return hashlib.sha256(json.dumps(list(messages), sort_keys=True).encode("utf-8")).hexdigest()[:16]


def ask_judge(
    items: Sequence[tuple[str, Sequence[Message]]],
    judge: Judge,
    temperature: float,
    max_tokens: int,
    cache_path: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, str]:
    """Reply per item id for ``items`` (id, messages); cached replies to identical messages are reused."""
    cached: dict[tuple[str, str], str] = {}
    if cache_path is not None and Path(cache_path).is_file():
        for line in Path(cache_path).read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted write: asked again
            cached[(str(row["id"]), str(row["hash"]))] = str(row["reply"])
    replies: dict[str, str] = {}
    fh = None
    if cache_path is not None:
        Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
        fh = open(cache_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        for item_id, messages in items:
            key = (item_id, messages_hash(messages))
            if key not in cached:
                cached[key] = judge.complete(messages, temperature, max_tokens)
                if fh is not None:
                    fh.write(json.dumps({"id": item_id, "hash": key[1], "judge": judge.name,
                                         "reply": cached[key]}, ensure_ascii=False) + "\n")
                    fh.flush()
            replies[item_id] = cached[key]
            if progress:
                progress(1)
    finally:
        if fh is not None:
            fh.close()
    return replies
