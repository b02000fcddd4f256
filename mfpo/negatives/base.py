"""What every rejected-image constructor takes and returns, and how it fails.

A constructor gets a batch of :class:`NegativeRequest` (one per item: the decoded image, its keyword
regions, texts and seed, as the stage graph holds them after ``regions``) and returns one
:class:`NegativeResult` per request, in order. Everything a result depends on is in the request and
the config, so the same request gives the same bytes (the seed drives every random draw, per item,
never per batch). A request a constructor cannot serve raises :func:`negatives_error`
(:class:`mfpo.stages.chunk.ItemError`, stage ``negatives``) with a reason a user can read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mfpo.negatives.config import NegativeKind
from mfpo.regions.base import Region

UInt8Image = npt.NDArray[np.uint8]
BoolMask = npt.NDArray[np.bool_]

STAGE = "negatives"
"""The stage name in the failures of this package."""


@dataclass(frozen=True)
class NegativeRequest:
    """One item as a constructor sees it.

    image: uint8 (H, W, 3) RGB, the image the stages work on; regions: the item's keyword regions from
    the regions stage (bool (H, W) masks; may be empty); keywords: its ranked keywords; question and
    chosen: the item's texts (AdaViP scores against ``chosen``, MBPO answers ``question``); seed: the
    item's seed (:attr:`mfpo.stages.chunk.StagedItem.seed`); id: the item id, named in error messages.
    """

    image: UInt8Image
    seed: int
    regions: tuple[Region, ...] = ()
    keywords: tuple[str, ...] = ()
    question: str = ""
    chosen: str = ""
    id: str | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class NegativeResult:
    """One constructor's output for one item.

    image: the rejected image, uint8 (h, w, 3) (for mdpo the model-resolution square, for mbpo the attacked
    model view; other kinds keep the input's size); mask: bool (h, w) of the pixels the method changed
    where that is a region (mfpo, adavip, global), else None; response: MBPO's rejected *answer* (None for
    the image-only kinds); fallback: None, or what was done instead of the method and why it was needed
    (e.g. ``"global_noise"``); details: JSON-serialisable facts for the record (scores, crop box, budget...).
    """

    kind: NegativeKind
    image: UInt8Image
    mask: BoolMask | None = None
    response: str | None = None
    fallback: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def negatives_error(reason: str, item_id: str | None = None) -> Exception:
    """An :class:`mfpo.stages.chunk.ItemError` of stage ``negatives`` (imported here, not at module import:
    the stage graph imports this package)."""
    from mfpo.stages.chunk import ItemError

    return ItemError(STAGE, f"item {item_id}: {reason}" if item_id else reason)


def check_image(request: NegativeRequest) -> None:
    """Raise :func:`negatives_error` unless the image is uint8 (H, W, 3) with H, W >= 1 and every region mask
    is bool (H, W)."""
    image = request.image
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise negatives_error(f"the image must be uint8 RGB (H, W, 3), got {got}", request.id)
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise negatives_error(f"the image is empty ({image.shape[1]}x{image.shape[0]})", request.id)
    for region in request.regions:
        if region.mask.shape != image.shape[:2]:
            raise negatives_error(
                f"the mask of region {region.keyword!r} is {region.mask.shape}, the image {image.shape[:2]}", request.id
            )


def derive_seed(seed: int, *parts: int | str) -> int:
    """A 63-bit seed for a sub-draw of an item (a candidate, an attack start) from its seed and ``parts``.

    Deterministic and independent of batch composition: the draw of candidate k of an item is the same
    whichever batch the item travels in.
    """
    from mfpo.ids import digest

    return int(digest(str(seed), *(str(p) for p in parts), length=16), 16) & ((1 << 63) - 1)
