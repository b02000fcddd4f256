"""The stage graph: the data path as four batch functions with declared inputs and outputs.

::

     items + images        keywords             regions               negatives              outcomes
    (intake: gateway --> [ keywords ] --> [  regions  ] --> [  negatives  ] --> [  perturb  ] --> finalize
     or file reader)      CPU, text only   GPU with grounding  GPU with CLIP /      CPU: MFPO noise,   (dataset,
                          sec. 3.1 graph + + SAM (else CPU):   inpainter / policy   PNGs, records      streamed,
                          PageRank         keyword -> masks    (else CPU): the      (sec. 3.1)         once per
                                                               siblings' images                        job)

    reads   items          items, keywords,   items, keywords,     items, images, keywords, regions,
                           images (models     regions, images      negatives
                           only)              (siblings only)
    writes  keywords       regions            rejected-{kind}/     images/ rejected/ masks/ per item,
                                              masks-{kind}/, then  then outcomes
                                              negatives

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

    ``device``: ``gpu`` marks a stage that may use models (regions: grounding + SAM; negatives: CLIP, the
    inpainter, the policy): it runs on the gpu queue when the job needs the deployment's models, else on the
    cpu queue (:func:`mfpo.jobs.dispatch.uses_models`). ``outputs[-1]`` is written last: its presence means
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
    from mfpo.stages.negatives import negatives_stage
    from mfpo.stages.perturb import perturb_stage
    from mfpo.stages.regions import regions_stage

    return (
        Stage("keywords", "cpu", ("items",), ("keywords",), keywords_stage,
              "MFPO sec. 3.1: multipartite keyword graph + weighted PageRank, top-K per item (text only)."),
        Stage("regions", "gpu", ("items", "images", "keywords"), ("regions",), regions_stage,
              "keywords -> region masks: annotations, grounding + SAM, or the global fallback (images are read "
              "only when a provider needs pixels)."),
        Stage("negatives", "gpu", ("items", "images", "keywords", "regions"), ("negatives",), negatives_stage,
              "The siblings' rejected images (AdaViP object removal, mDPO crop, MBPO attack, global noise) per "
              "kind asked for; reads no image when only mfpo is."),
        Stage("perturb", "cpu", ("items", "images", "keywords", "regions", "negatives"), ("outcomes",),
              perturb_stage,
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
