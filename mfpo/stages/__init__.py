"""The stage graph of MFPO's data path (picture and rules in :mod:`mfpo.stages.graph`).

>>> from mfpo.stages import GRAPH, run_stage   # doctest: +SKIP
>>> for stage in GRAPH:                          # doctest: +SKIP
...     run_stage(stage, chunk_io, config, resources)
"""

from mfpo.stages.artifacts import Outcome, StageOutput
from mfpo.stages.chunk import Chunk, ItemError, StagedItem, describe_item
from mfpo.stages.graph import GRAPH, STAGES, Stage, first_stage, next_stage, producer
from mfpo.stages.io import ChunkIO, MemoryChunkIO, MissingInput, OutputWriter, StoreChunkIO
from mfpo.stages.runner import TRANSIENT, StageContext, StageRun, run_stage

__all__ = [
    "GRAPH",
    "STAGES",
    "TRANSIENT",
    "Chunk",
    "ChunkIO",
    "ItemError",
    "MemoryChunkIO",
    "MissingInput",
    "Outcome",
    "OutputWriter",
    "Stage",
    "StageContext",
    "StageOutput",
    "StageRun",
    "StagedItem",
    "StoreChunkIO",
    "describe_item",
    "first_stage",
    "next_stage",
    "producer",
    "run_stage",
]
