"""Stage 1, keywords (CPU, text only): the chosen answer's top-K keywords (MFPO section 3.1).

Reads ``items``; writes ``keywords``: per item the ranked keywords of its chosen answer
(:func:`mfpo.keywords.extract_keywords`: multipartite word graph + weighted PageRank). An answer
with no candidate noun phrase gets ``[]`` (the regions stage then falls back to the whole image).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mfpo.keywords import extract_keywords
from mfpo.schemas import KeywordScore
from mfpo.stages.artifacts import ArtifactName, StageOutput, encode_keywords
from mfpo.stages.chunk import ItemError

if TYPE_CHECKING:
    from mfpo.stages.runner import StageContext


def select_keywords(text: str, ctx: StageContext) -> list[KeywordScore]:
    """Top-K keywords of one chosen answer; a ranking error is this item's failure (stage ``keywords``)."""
    try:
        return extract_keywords(text, ctx.config.keywords, embedder=ctx.resources.embedder)
    except ValueError as exc:
        raise ItemError("keywords", str(exc)) from exc


def keywords_stage(ctx: StageContext) -> dict[ArtifactName, bytes]:
    from mfpo.stages.runner import guarded

    output: StageOutput[list[KeywordScore]] = StageOutput()
    for item in ctx.chunk.items:
        keywords = guarded("keywords", item, output.failures, select_keywords, item.item.chosen, ctx,
                           limit_s=ctx.item_time_limit_s)
        if keywords is not None:
            output.results[item.id] = keywords
    return {"keywords": encode_keywords(output)}
