"""The stage graph: MFPO's data path as three batch functions with declared inputs and outputs.

::

      items + images            keywords               regions                 outcomes
    (intake: gateway   --->  [ keywords ]  --->   [  regions  ]  --->    [  perturb  ]  ---> finalize
     or file reader)          CPU, text only        GPU with grounding      CPU: noise, PNGs,   (dataset,
                              sec. 3.1 graph +      + SAM (else CPU):       per-item files,     streamed,
                              PageRank              keyword -> masks        records             once per job)

    reads   items              items, keywords,       items, images, keywords, regions
                               images (models only)
    writes  keywords           regions                images/ rejected/ masks/ per item, then outcomes

Each stage runs over a *chunk* of items (:mod:`mfpo.stages.chunk`), reads only its declared
inputs and writes its declared outputs, the last of which marks it done (its commit); the
rules every stage shares (skip when done, per-item failures with reasons, transient errors
propagate for a retry) live in one place, :func:`mfpo.stages.runner.run_stage`.

Two executors run this one graph: ``mfpo generate`` (:mod:`mfpo.pipeline.embedded`, the chunks
of a file in a process pool, intermediates in memory) and the platform's Celery workers
(``worker/tasks.py``, one task per chunk and stage, artifacts in the object store). Nothing else
orchestrates the stages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mfpo.stages.artifacts import ArtifactName

if TYPE_CHECKING:
    from mfpo.stages.runner import StageContext

Device = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class Stage:
    """One step of the graph.

    ``device``: ``gpu`` marks the stage that uses the region models (it runs on the gpu queue when the
    deployment has them, else on the cpu queue). ``outputs[-1]`` is written last: its presence means
    the stage is done for the chunk.
    """

    name: str
    device: Device
    inputs: tuple[ArtifactName, ...]
    outputs: tuple[ArtifactName, ...]
    run: Callable[[StageContext], dict[ArtifactName, bytes]]
    description: str = ""

    @property
    def commit(self) -> ArtifactName:
        return self.outputs[-1]


def _graph() -> tuple[Stage, ...]:
    from mfpo.stages.keywords import keywords_stage
    from mfpo.stages.perturb import perturb_stage
    from mfpo.stages.regions import regions_stage

    return (
        Stage("keywords", "cpu", ("items",), ("keywords",), keywords_stage,
              "MFPO sec. 3.1: multipartite keyword graph + weighted PageRank, top-K per item (text only)."),
        Stage("regions", "gpu", ("items", "images", "keywords"), ("regions",), regions_stage,
              "keywords -> region masks: annotations, grounding + SAM, or the global fallback (images are read "
              "only when a provider needs pixels)."),
        Stage("perturb", "cpu", ("items", "images", "keywords", "regions"), ("outcomes",), perturb_stage,
              "MFPO sec. 3.1: diffusion noise inside the masks; per-item files, then the chunk's outcomes."),
    )


GRAPH: tuple[Stage, ...] = _graph()
"""The stages in order; each consumes what the ones before it wrote."""

STAGES: dict[str, Stage] = {s.name: s for s in GRAPH}


def first_stage() -> Stage:
    return GRAPH[0]


def next_stage(stage: Stage) -> Stage | None:
    """The stage after ``stage``, or None after the last."""
    index = GRAPH.index(stage)
    return GRAPH[index + 1] if index + 1 < len(GRAPH) else None


def producer(artifact: ArtifactName) -> Stage | None:
    """The stage whose outputs include ``artifact`` (None for the intake's ``items``/``images``)."""
    return next((s for s in GRAPH if artifact in s.outputs), None)
