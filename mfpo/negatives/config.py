"""Settings of the rejected-image constructors: one typed config per method, and which methods a job runs.

Method settings (crop proportions, attack budget, mask dilation, ...) decide an item's output, so they
belong in the job's options; model locations (``model_path``, ``device``, ``dtype``, batch sizes) are
deployment settings, like ``regions.grounding`` / ``regions.sam``. The ``mfpo`` and ``global`` kinds are
configured by :class:`mfpo.perturbation.PerturbationConfig` (the run's diffusion noise): MFPO's global
ablation is the same noise over the whole image.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mfpo.config import ComponentConfig
from mfpo.devices import DtypeName

NegativeKind = Literal["mfpo", "adavip", "mdpo", "mbpo", "global"]
NEGATIVE_KINDS: tuple[NegativeKind, ...] = ("mfpo", "adavip", "mdpo", "mbpo", "global")

DEPLOYMENT_FIELDS: frozenset[str] = frozenset({"model_path", "device", "dtype", "batch_size"})
"""Fields that say where and how a model runs, not what an item's output is: deployment settings (the platform
fills them from its own settings), left out of :meth:`NegativesConfig.output_options`."""


def _without_deployment(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_deployment(v) for k, v in value.items() if k not in DEPLOYMENT_FIELDS}
    return value

COCO_LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
"""The 80 COCO object categories: the default open-vocabulary query list for AdaViP's extra candidates."""


class MdpoConfig(ComponentConfig):
    """mDPO's image corruption (Wang et al. 2024): a random resized crop, as their trainer makes it."""

    scale: tuple[float, float] = Field(
        default=(0.01, 0.2),
        description=(
            "Range of the crop's area as a fraction of the (squared) image, drawn uniformly: mDPO's "
            "RandomResizedCrop(scale=(0.01, 0.2)) (luka-group/mDPO bunny/modeling_bunny_phi.py crop_images)."
        ),
    )
    ratio: tuple[float, float] = Field(
        default=(3.0 / 4.0, 4.0 / 3.0),
        description="Range of the crop's width/height, drawn log-uniformly: torchvision's default, which mDPO keeps.",
    )
    frame: Literal["pad_square", "native"] = Field(
        default="pad_square",
        description=(
            "What the crop is taken from. pad_square: the image padded to a square with pad_color and resized to "
            "output_size, as mDPO's Bunny/LLaVA processor hands it to the model (expand2square, then the crop is "
            "applied to those pixel values; the authors' path). native: the image itself (its shorter side resized "
            "to output_size when set); ours, for processors that do not pad."
        ),
    )
    pad_color: tuple[int, int, int] = Field(
        default=(122, 116, 104),
        description=(
            "RGB fill of the square padding: int(255 * image_mean) of the model's processor, as expand2square uses it. "
            "(122, 116, 104) = CLIP's mean (LLaVA-1.5); Bunny's SigLIP mean 0.5 gives (127, 127, 127)."
        ),
    )
    output_size: int | None = Field(
        default=336,
        ge=8,
        description=(
            "Side in pixels of the square the crop is drawn on and resized back to (pad_square), or the shorter side "
            "(native): the model's input, so the crop has the proportions of what the model sees. 336 = LLaVA-1.5 "
            "(mDPO's Bunny: 384). None keeps the image's own size (large images cost memory)."
        ),
    )

    @model_validator(mode="after")
    def _ranges(self) -> MdpoConfig:
        lo, hi = self.scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"mdpo scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"mdpo ratio must satisfy 0 < min <= max, got {self.ratio}")
        if any(not 0 <= c <= 255 for c in self.pad_color):
            raise ValueError(f"mdpo pad_color must be 8-bit RGB, got {self.pad_color}")
        return self


class FillInpaintConfig(ComponentConfig):
    """The classical CPU inpainter: pull-push initialisation + Jacobi relaxation of Laplace's equation."""

    iterations: int = Field(
        default=40,
        ge=0,
        le=10_000,
        description=(
            "Jacobi sweeps per pyramid level after the pull-push fill (smooths the fill into a membrane; 0 keeps the "
            "pull-push fill)."
        ),
    )


class DiffusersInpaintConfig(ComponentConfig):
    """A diffusers inpainting pipeline from a local folder (Stable Diffusion inpainting and kin)."""

    model_path: str = Field(
        description=(
            "A diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), "
            "e.g. stable-diffusion-v1-5/stable-diffusion-inpainting saved locally; loaded with "
            "AutoPipelineForInpainting.from_pretrained. A hub id works only where the deployment has network."
        )
    )
    prompt: str = Field(
        default="",
        description=(
            "Text prompt of every fill. AdaViP removes objects with LaMa, which takes no text; an empty prompt "
            "without guidance is the text-free use of a text-to-image inpainter."
        ),
    )
    negative_prompt: str = Field(default="", description="Negative prompt (used only when guidance_scale > 1).")
    guidance_scale: float = Field(
        default=1.0, ge=0.0, description="Classifier-free guidance weight; <= 1 runs the UNet once per step (no CFG)."
    )
    num_inference_steps: int = Field(default=25, ge=1, le=1000, description="Denoising steps per fill.")
    resolution: int = Field(
        default=512,
        ge=8,
        description=(
            "Longer side, in pixels, of the image the pipeline works on (SD-1.5 inpainting: 512); each side is "
            "rounded to the pipeline's multiple. The fill is resized back and pasted inside the mask only."
        ),
    )
    batch_size: int = Field(default=8, ge=1, description="Fills per pipeline call (same working size).")
    device: str = Field(default="auto", description="torch device: auto (cuda if present) | cpu | cuda | cuda:N.")
    dtype: DtypeName = Field(
        default="auto", description="Weights dtype: auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16."
    )


class ClipScoreConfig(ComponentConfig):
    """CLIP for AdaViP eq. 9: the similarity of each candidate image to the chosen answer's sentences."""

    model_path: str = Field(
        description=(
            "A transformers CLIP folder (CLIPModel + processor), e.g. openai/clip-vit-large-patch14 saved locally."
        )
    )
    batch_size: int = Field(default=32, ge=1, description="Images per CLIP image-encoder pass.")
    device: str = Field(default="auto", description="torch device: auto (cuda if present) | cpu | cuda | cuda:N.")
    dtype: DtypeName = Field(
        default="auto", description="Autocast dtype: auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16."
    )


class AdavipConfig(ComponentConfig):
    """AdaViP's vision-based rejected image (sec. 3.2, Algorithm 1): remove the object least like the answer."""

    candidates: Literal["regions", "regions+detector"] = Field(
        default="regions",
        description=(
            "Candidate objects (AdaViP eq. 5-7 uses RAM tags -> GroundingDINO -> SAM). regions: the item's keyword "
            "regions (annotations or grounding + SAM, from the regions stage); regions+detector: also the grounding "
            "model's detections of detect_labels, segmented by SAM (needs regions.grounding and regions.sam)."
        ),
    )
    detect_labels: tuple[str, ...] = Field(
        default=COCO_LABELS,
        description="Open-vocabulary queries of the detector for extra candidates (our stand-in for RAM's tags).",
    )
    labels_per_query: int = Field(
        default=20,
        ge=1,
        description=(
            "detect_labels per detector prompt: GroundingDINO reads all of a prompt's labels at once within 256 "
            "tokens, so the list is asked in groups of this many (OWLv2 scores each label separately)."
        ),
    )
    max_candidates: int = Field(
        default=8, ge=1, le=64, description="Most candidate objects inpainted per item (keyword regions first)."
    )
    mask_dilation: int = Field(
        default=15,
        ge=0,
        le=256,
        description=(
            "Grow each object's mask by this many pixels before inpainting, so its border and shadow go too "
            "(Inpaint-Anything's 15 px default for LaMa removal)."
        ),
    )
    min_mask_fraction: float = Field(
        default=0.0005, ge=0.0, lt=1.0, description="Skip a candidate whose mask covers less than this image fraction."
    )
    max_mask_fraction: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Skip a candidate whose dilated mask covers more than this fraction (removing it erases the "
        "image).",
    )
    same_object_iou: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="A detection whose mask has at least this IoU with an earlier candidate is the same object.",
    )
    max_sentences: int = Field(
        default=16, ge=1, description="Sentences of the chosen answer scored in eq. 9 (the first N; one CLIP text "
        "each)."
    )
    inpainter: Literal["fill", "diffusers"] = Field(
        default="fill",
        description=(
            "fill: classical CPU fill (pull-push + Laplace relaxation, no model); diffusers: the inpainting pipeline "
            "of adavip.diffusers. AdaViP uses Big LaMa."
        ),
    )
    fill: FillInpaintConfig = Field(default_factory=FillInpaintConfig, description="The classical fill's settings.")
    diffusers: DiffusersInpaintConfig | None = Field(
        default=None, description="The diffusers inpainting pipeline (inpainter=diffusers); a deployment setting."
    )
    clip: ClipScoreConfig | None = Field(
        default=None, description="CLIP for the eq. 9 choice; required by the adavip kind (a deployment setting)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> AdavipConfig:
        if self.min_mask_fraction >= self.max_mask_fraction:
            raise ValueError("adavip min_mask_fraction must be below max_mask_fraction")
        if self.inpainter == "diffusers" and self.diffusers is None:
            raise ValueError("adavip inpainter 'diffusers' needs adavip.diffusers.model_path (a pipeline folder)")
        return self


class MbpoConfig(ComponentConfig):
    """MBPO's adversarial hard negatives: PGD on the image through the policy, then its answer (greedy)."""

    model_path: str | None = Field(
        default=None,
        description=(
            "The policy: a LLaVA-1.5 transformers folder (llava-hf layout, LlavaForConditionalGeneration) or hub "
            "id; required by the mbpo kind (a deployment setting)."
        ),
    )
    objective: Literal["features", "answer"] = Field(
        default="features",
        description=(
            "What PGD maximises. features: the distance of the attacked image's projected vision features (what the "
            "LLM reads) from the clean image's, so the answer must come from the language prior; answer: the "
            "negative log-likelihood of the chosen answer. See mfpo.negatives.mbpo."
        ),
    )
    epsilon: float = Field(
        default=8.0, gt=0.0, le=255.0, description="L-inf budget of the perturbation in 8-bit levels (8 = 8/255)."
    )
    step_size: float = Field(default=2.0, gt=0.0, le=255.0, description="PGD step in 8-bit levels (2 = 2/255).")
    steps: int = Field(default=10, ge=1, le=1000, description="PGD iterations (Madry et al. 2018: 7-20).")
    random_start: bool = Field(
        default=True,
        description=(
            "Start from a uniform point of the L-inf ball on the 8-bit grid (drawn from the item's seed); required "
            "by the features objective, whose gradient is 0 at the clean image."
        ),
    )
    max_new_tokens: int = Field(default=256, ge=1, description="Longest rejected response, in tokens (greedy).")
    batch_size: int = Field(default=8, ge=1, description="Images per attack / generate batch.")
    device: str = Field(default="auto", description="torch device: auto (cuda if present) | cpu | cuda | cuda:N.")
    dtype: DtypeName = Field(
        default="auto", description="Weights dtype: auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16."
    )

    @model_validator(mode="after")
    def _step(self) -> MbpoConfig:
        if self.step_size > self.epsilon:
            raise ValueError(f"mbpo step_size ({self.step_size}) must not exceed epsilon ({self.epsilon})")
        if self.objective == "features" and not self.random_start:
            raise ValueError("mbpo objective 'features' needs random_start: its gradient is 0 at the clean image")
        return self


class NegativesConfig(ComponentConfig):
    """Which rejected images a job makes (one column per kind) and each method's settings."""

    kinds: list[NegativeKind] = Field(
        default=["mfpo"],
        description=(
            "Constructors to run per item: mfpo (diffusion noise in the keyword regions, MFPO sec. 3.1), adavip "
            "(object removal + CLIP choice, AdaViP sec. 3.2), mdpo (random resized crop, mDPO), mbpo (PGD-attacked "
            "image + the policy's answer on it, MBPO), global (noise over the whole image, MFPO's ablation)."
        ),
    )
    mdpo: MdpoConfig = Field(default_factory=MdpoConfig, description="mDPO's crop.")
    adavip: AdavipConfig = Field(default_factory=AdavipConfig, description="AdaViP's object removal.")
    mbpo: MbpoConfig = Field(default_factory=MbpoConfig, description="MBPO's adversarial negatives.")

    @property
    def primary(self) -> NegativeKind:
        """The first kind: its image is the record's ``rejected_image``."""
        return self.kinds[0]

    def output_options(self) -> dict[str, Any]:
        """What decides the items' outputs (hashed into their keys): the kinds and the settings of the kinds run,
        without deployment fields. Empty for the default (MFPO's noise alone), so its keys are unchanged."""
        if self.kinds == ["mfpo"]:
            return {}
        data = self.model_dump(mode="json")
        return {"kinds": list(self.kinds),
                **{k: _without_deployment(data[k]) for k in ("mdpo", "adavip", "mbpo") if k in self.kinds}}

    @model_validator(mode="after")
    def _kinds(self) -> NegativesConfig:
        if not self.kinds:
            raise ValueError("negatives.kinds is empty: name at least one of " + ", ".join(NEGATIVE_KINDS))
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"negatives.kinds repeats a kind: {self.kinds}")
        if "adavip" in self.kinds and self.adavip.clip is None:
            raise ValueError("negatives kind 'adavip' needs a CLIP model: set negatives.adavip.clip.model_path")
        if "mbpo" in self.kinds and self.mbpo.model_path is None:
            raise ValueError("negatives kind 'mbpo' needs the policy model: set negatives.mbpo.model_path")
        return self
