"""Data contracts: input preference items, result records, failures.

These are the shapes every reader produces and every exporter, service and
trainer consumes. Image references inside an item are strings: a filesystem path
(relative paths are resolved by the reader against the input file's folder), an
``http(s)://`` URL, a ``data:image/...;base64,`` URI, or a store key
(``store://KEY``) for images already uploaded to the object store.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

Box = tuple[float, float, float, float]
"""An axis-aligned box ``(x0, y0, x1, y1)`` in pixels of the original image."""

Provenance = dict[Annotated[str, StringConstraints(min_length=1, max_length=64)],
                  Annotated[str, StringConstraints(max_length=4096)]]
"""Where an item came from, as the input dataset names it (e.g. RLAIF-V's ``ds_name``, ``origin_dataset``,
``origin_split``, ``idx``): column name -> value, both strings."""

SYSTEM_DESCRIPTION = (
    "System prompt of the conversation (e.g. a TRL row's system turn); None when the input had none. Kept "
    "through to the exports (TRL: the first message of the prompt)."
)
SOURCE_DESCRIPTION = (
    "Provenance of the item as its input dataset gave it (RLAIF-V/RLHF-V: ds_name, origin_dataset, origin_split, "
    "idx, image_path; VLFeedback: id and the chosen/rejected models): column -> value, at most 32 entries. The "
    "RLAIF-V export writes these columns back unchanged; None when the input had none."
)


class Annotation(BaseModel):
    """One labelled region of an item's image: a box or a polygon, in pixels."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    label: str = Field(min_length=1, description="Object name, e.g. 'red cup'.")
    box: Box | None = Field(default=None, description="[x0, y0, x1, y1] in pixels.")
    polygon: list[tuple[float, float]] | None = Field(
        default=None, description="[[x, y], ...] vertices in pixels (3 or more)."
    )

    @field_validator("label")
    @classmethod
    def _strip_label(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("annotation label is empty")
        return v

    @field_validator("box")
    @classmethod
    def _check_box(cls, v: Box | None) -> Box | None:
        if v is not None and (v[2] <= v[0] or v[3] <= v[1]):
            raise ValueError(f"box {list(v)} must have x1 > x0 and y1 > y0")
        return v

    @field_validator("polygon")
    @classmethod
    def _check_polygon(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is not None and len(v) < 3:
            raise ValueError("polygon needs at least 3 vertices")
        return v

    @model_validator(mode="after")
    def _one_shape(self) -> Annotation:
        if (self.box is None) == (self.polygon is None):
            raise ValueError("an annotation needs exactly one of 'box' or 'polygon'")
        return self


class PreferenceItem(BaseModel):
    """A text preference item: image, question, chosen and rejected answers.

    ``id`` is optional on input; readers fill it with a content-derived id
    (:func:`mfpo.ids.item_id`) when it is missing.
    """

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, description="Stable item id; content hash if absent.")
    image: str = Field(min_length=1, description="Path, URL, data-URI or store:// key.")
    question: str = Field(description="The prompt shown with the image.")
    chosen: str = Field(description="The preferred (faithful) answer.")
    rejected: str = Field(description="The dispreferred (hallucinated) answer.")
    annotations: list[Annotation] = Field(default_factory=list, description="Known regions.")
    system: str | None = Field(default=None, max_length=100_000, description=SYSTEM_DESCRIPTION)
    source: Provenance | None = Field(default=None, max_length=32, description=SOURCE_DESCRIPTION)

    @field_validator("system")
    @classmethod
    def _blank_system_is_none(cls, v: str | None) -> str | None:
        return v if v is None or v.strip() else None

    @field_validator("question", "chosen", "rejected")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("text is empty")
        return v

    @field_validator("id")
    @classmethod
    def _safe_id(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from mfpo.ids import check_safe_id

        return check_safe_id(v)


class KeywordScore(BaseModel):
    """A selected keyword and its PageRank score r(k_i) (MFPO section 3.1)."""

    text: str
    score: float


RegionSource = Literal["annotations", "grounded", "global", "random"]
"""Provider of a region; the fallback chain is annotations -> grounded -> global."""


class RegionRecord(BaseModel):
    """One perturbed region: which keyword it stands for and where it is."""

    keyword: str | None = Field(description="Keyword mapped to the region; None for global/random.")
    box: Box = Field(description="Bounding box of the region's mask, pixels (x0, y0, x1, y1).")
    source: RegionSource = Field(description="Provider that produced the region.")
    area: float = Field(description="Fraction of the image covered by this region's mask.")


class PerturbationRecord(BaseModel):
    """How the rejected image was made (MFPO section 3.1, diffusion noise)."""

    mode: str = Field(description="Region provider asked for: annotations|global|random|auto|...")
    noise_step: int = Field(description="Diffusion timestep t.")
    schedule: str = Field(description="DDPM beta schedule name.")
    seed: int = Field(description="Seed of the noise eps for this item.")
    fallback: bool = Field(description="True when no region was found and the whole image was noised.")


class NegativeRecord(BaseModel):
    """One constructor's rejected image of an item (``mfpo.negatives``): where it is and how it was made."""

    image: str = Field(description="The rejected image (PNG), relative to the dataset folder.")
    mask: str = Field(
        description="PNG of the pixels the method changed, at the rejected image's size (mfpo: the noised regions; "
        "adavip: the removed object; global, mdpo's crop and mbpo's attack: every pixel).",
    )
    response: str | None = Field(
        default=None, description="mbpo: the policy's greedy answer on the attacked image (the rejected answer)."
    )
    fallback: str | None = Field(
        default=None, description="What was done instead of the method and why (e.g. 'global_noise: ...'); None."
    )
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="The method's facts: adavip every candidate's label, box and eq. 9 score and the choice; mdpo the "
        "crop box; mbpo the budget, measured L-inf and objective before/after; mfpo the noised fraction.",
    )


class ResultRecord(BaseModel):
    """One dataset record. Image paths are relative to the dataset folder.

    ``rejected_image``/``mask`` are the first constructor's of the job (``negatives.kinds[0]``, ``mfpo`` by
    default); ``negatives`` holds every constructor's, by kind (empty in datasets written before constructors:
    ``rejected_image`` is then MFPO's).
    """

    id: str
    question: str
    chosen: str
    rejected: str
    image: str
    rejected_image: str
    mask: str
    keywords: list[KeywordScore]
    regions: list[RegionRecord]
    keywords_not_found: list[str] = Field(
        default_factory=list,
        description="Keywords that no keyword-based provider located (no box above threshold, or a degenerate mask).",
    )
    perturbation: PerturbationRecord
    source_size: tuple[int, int] | None = Field(
        default=None,
        description="(width, height) of the submitted image when it was over limits.max_working_pixels and "
        "reduced; image, rejected_image, mask, boxes and areas are then of the reduced image.",
    )
    system: str | None = Field(default=None, description=SYSTEM_DESCRIPTION)
    source: dict[str, str] | None = Field(default=None, description=SOURCE_DESCRIPTION)
    negatives: dict[str, NegativeRecord] = Field(
        default_factory=dict,
        description="Each constructor's rejected image by kind (mfpo, adavip, mdpo, mbpo, global), in the job's order.",
    )

    def files(self) -> list[str]:
        """Every file the record names (relative paths), each once: image, rejected image, mask, then each kind's."""
        paths = [self.image, self.rejected_image, self.mask]
        for negative in self.negatives.values():
            paths += [negative.image, negative.mask]
        return list(dict.fromkeys(paths))

    def with_negative(self, kind: str) -> ResultRecord:
        """This record with ``kind``'s rejected image as ``rejected_image``/``mask`` (and MBPO's answer, when it has
        one, as ``rejected``): what an exporter or trainer reads. ValueError when the record lacks ``kind``."""
        negative = self.negative(kind)
        if negative is None:
            held = ", ".join(self.negatives) or "mfpo"
            raise ValueError(f"record {self.id!r} has no {kind!r} rejected image (it holds: {held})")
        return self.model_copy(update={"rejected_image": negative.image, "mask": negative.mask,
                                       "rejected": negative.response or self.rejected})

    def negative(self, kind: str) -> NegativeRecord | None:
        """``kind``'s rejected image; a record without ``negatives`` (older datasets) has MFPO's only."""
        if self.negatives:
            return self.negatives.get(kind)
        if kind == "mfpo":
            return NegativeRecord(image=self.rejected_image, mask=self.mask)
        return None


class Failure(BaseModel):
    """A row that could not be turned into a record, with a readable reason."""

    row: int | None = Field(description="0-based row number in the input, when known.")
    id: str | None = Field(default=None, description="Item id, when it could be read.")
    reason: str = Field(description="Why the row failed, for a person to read.")
    stage: str = Field(description="read|validate|image|keywords|regions|perturb|store")
    raw: dict | str | None = Field(default=None, description="The row as read (images elided).")
