"""Data contracts: input preference items, result records, failures.

These are the shapes every reader produces and every exporter, service and
trainer consumes. Image references inside an item are strings: a filesystem path
(relative paths are resolved by the reader against the input file's folder), an
``http(s)://`` URL, a ``data:image/...;base64,`` URI, or a store key
(``store://KEY``) for images already uploaded to the object store.
"""

from __future__ import annotations

from typing import Annotated, Literal

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


class ResultRecord(BaseModel):
    """One dataset record. Image paths are relative to the dataset folder."""

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


class Failure(BaseModel):
    """A row that could not be turned into a record, with a readable reason."""

    row: int | None = Field(description="0-based row number in the input, when known.")
    id: str | None = Field(default=None, description="Item id, when it could be read.")
    reason: str = Field(description="Why the row failed, for a person to read.")
    stage: str = Field(description="read|validate|image|keywords|regions|perturb|store")
    raw: dict | str | None = Field(default=None, description="The row as read (images elided).")
