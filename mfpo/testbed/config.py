"""The testbed's fixed configuration: world, model, SFT, preference training, runs, tables, evaluation, seeds.

Everything that decides a number in the report is here, typed and documented, and the committed
``configs/testbed.json`` is what ``mfpo testbed`` runs (issue 16, "Honesty": fixed before comparing
methods). ``configs/testbed-mini.json`` is the suite's end-to-end check of the machinery.

The run matrix is data: a :class:`RunSpec` is one preference-training run from the base model (a loss of
:mod:`trainer.losses` with its weights and margin, a curriculum, and the rejected images it trains on);
a :class:`TableSpec` is one table of the report. :func:`default_runs` / :func:`default_tables` are the
paper's:

=========  ==========================================================  ==================================
table      rows                                                        MFPO paper
=========  ==========================================================  ==================================
main       base, DPO (text only), MFPO, mDPO, AdaViP                    Table 1 (DPO, mDPO rows), Table 9
table4     L_text+L_margin, L_image+L_margin, L_text only, all          Table 4 (loss composition)
table5     margin eta 0, 0.2, 0.4                                       Table 5
table7     easy-to-hard, end-to-end                                     Table 7 (+ Figure 7's losses)
table8     global noise, random 20% region, keyword regions             Table 8
figure8    noise step t = 100, 300, 500, 700, 900                       Figure 8
=========  ==========================================================  ==================================

DPO, mDPO and AdaViP train end to end (their papers have no curriculum); every MFPO variant trains easy
to hard unless it is Table 7's ablation. mDPO and AdaViP train on their own negatives (``mdpo`` crop,
``adavip`` removal), made by ``mfpo generate``'s negatives stage in the same dataset as MFPO's noise.

The preference-training settings are the trainer's own :class:`trainer.config.TrainConfig` and the SFT
settings its :class:`trainer.config.SftConfig` (pydantic only, no torch): the one place besides
:mod:`mfpo.eval.logps` where the library reaches into the ``trainer`` package of the same distribution.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mfpo.config import ComponentConfig
from mfpo.negatives.config import AdavipConfig, MdpoConfig
from mfpo.synth import KINDS, PALETTE
from trainer.config import LossName, SftConfig, TrainConfig

NegativesKind = Literal["mfpo", "global", "random", "mdpo", "adavip"]
"""Which rejected images a run trains on: MFPO's region noise (exact annotation regions), its Table 8
ablations (the same noise over the whole image, or over a random rectangle of 20% of it), or a sibling
method's own negatives made by ``mfpo generate``'s negatives stage (mDPO's crop, AdaViP's object removal)."""


class Prior(ComponentConfig):
    """A language prior of the world: ``partner`` appears with ``anchor`` in a set share of the scenes."""

    anchor: str = Field(description="Object kind whose presence the prior conditions on (e.g. 'cup').")
    partner: str = Field(description="Object kind that co-occurs with the anchor (e.g. 'ball'); listed right "
                                     "after the anchor in captions, so the words themselves carry the prior.")
    sft: float = Field(default=0.9, ge=0.0, le=1.0,
                         description="P(partner | anchor) in the SFT scenes (exact: one coin per anchor scene).")
    preference: float = Field(default=0.5, ge=0.0, le=1.0,
                              description="P(partner | anchor) in the preference-data scenes.")
    test: float = Field(default=0.5, ge=0.0, le=1.0,
                        description="P(partner | anchor) in the held-out test scenes: the prior is broken "
                                    "(below sft), so leaning on it hallucinates the partner.")


class WorldConfig(ComponentConfig):
    """The procedural world: object kinds, colours, priors, scene sizes and split sizes (all seeded)."""

    seed: int = Field(default=0, ge=0, description="World seed: every scene of every split is a pure function "
                                                   "of (this config, split, index).")
    image_size: int = Field(default=64, ge=64, le=512, description="Rendered image side, pixels (square).")
    kinds: tuple[str, ...] = Field(
        default=("cup", "ball", "car", "tree", "star", "house", "fish", "flower"),
        description="Object kinds (mfpo.synth nouns), in caption order: a caption lists its objects in this "
                    "order, so put each prior's partner right after its anchor.",
    )
    colors: tuple[str, ...] = Field(default=("red", "yellow", "green", "blue", "white"),
                                    description="Object colour names (mfpo.synth palette).")
    kind_colors: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Colours a kind is drawn in, where it is not every one of ``colors`` (kind -> colour names). "
                    "One colour per kind makes a kind recognisable by its colour: what a tiny vision tower "
                    "trained from scratch in minutes can learn, where shapes alone it cannot (README, Testbed).",
    )
    priors: tuple[Prior, ...] = Field(
        default=(Prior(anchor="cup", partner="ball"), Prior(anchor="car", partner="tree")),
        description="Co-occurrence priors; no kind may take part in two of them.",
    )
    min_groups: int = Field(default=1, ge=1, description="Fewest object kinds per scene (before priors).")
    max_groups: int = Field(default=3, ge=1, description="Most object kinds per scene (before priors add a "
                                                         "partner, which may make one more).")
    two_prob: float = Field(default=0.2, ge=0.0, le=1.0,
                            description="Chance that a kind appears twice (same colour: 'two red cups').")
    min_size: float = Field(default=0.24, gt=0.0, le=1.0, description="Smallest object, fraction of the side.")
    max_size: float = Field(default=0.34, gt=0.0, le=1.0, description="Largest object, fraction of the side.")
    min_visible: float = Field(default=0.75, ge=0.0, le=1.0,
                               description="Least visible fraction of each object where objects overlap.")
    noise_std: float = Field(default=2.0, ge=0.0, description="Gaussian grain std, 0-255 units.")
    sft_scenes: int = Field(default=3000, ge=1, description="Scenes the base model is trained on (SFT).")
    questions_per_scene: int = Field(default=2, ge=0,
                                     description="Short questions per SFT scene besides its caption (existence, "
                                                 "colour or count, drawn uniformly).")
    preference_scenes: int = Field(default=600, ge=1, description="Scenes of the preference data.")
    test_scenes: int = Field(default=300, ge=1, description="Held-out scenes (prior broken) for every metric.")

    @model_validator(mode="after")
    def _check(self) -> WorldConfig:
        bad = [k for k in self.kinds if k not in KINDS] + [c for c in self.colors if c not in PALETTE]
        bad += [k for k in self.kind_colors if k not in self.kinds]
        bad += [c for cs in self.kind_colors.values() for c in cs if c not in PALETTE]
        bad += [k for k, cs in self.kind_colors.items() if not cs]
        if bad:
            raise ValueError(f"unknown kinds/colours (or a kind without colours) {bad}")
        if len(set(self.kinds)) != len(self.kinds) or len(self.kinds) < 3:
            raise ValueError("kinds must be at least 3 distinct nouns")
        seen: set[str] = set()
        for p in self.priors:
            for k in (p.anchor, p.partner):
                if k not in self.kinds:
                    raise ValueError(f"prior kind {k!r} is not one of the world's kinds")
                if k in seen:
                    raise ValueError(f"kind {k!r} takes part in two priors")
                seen.add(k)
        if self.min_groups > self.max_groups or self.max_groups >= len(self.kinds):
            raise ValueError("need min_groups <= max_groups < number of kinds")
        if self.min_size > self.max_size:
            raise ValueError("min_size > max_size")
        return self

    def colors_of(self, kind: str) -> tuple[str, ...]:
        """The colours ``kind`` is drawn in."""
        return self.kind_colors.get(kind, self.colors)

    @property
    def all_colors(self) -> tuple[str, ...]:
        """Every colour some kind is drawn in."""
        return tuple(dict.fromkeys((*self.colors, *(c for cs in self.kind_colors.values() for c in cs))))


class ModelConfig(ComponentConfig):
    """The tiny LLaVA-1.5 of the testbed (``mfpo models tiny-llava``'s architecture, larger): sizes."""

    image_size: int = Field(default=64, ge=16, description="Side of the image the CLIP vision tower sees.")
    patch_size: int = Field(default=8, ge=2, description="Vision patch side; image_size / patch_size squared "
                                                         "image tokens.")
    vision_hidden: int = Field(default=96, ge=8, description="CLIP vision hidden size.")
    vision_layers: int = Field(default=3, ge=2, description="CLIP vision layers (LLaVA takes layer -2).")
    vision_heads: int = Field(default=4, ge=1, description="CLIP vision attention heads.")
    text_hidden: int = Field(default=128, ge=8, description="Llama hidden size.")
    text_layers: int = Field(default=3, ge=1, description="Llama layers.")
    text_heads: int = Field(default=4, ge=1, description="Llama attention heads.")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.image_size % self.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        if self.vision_hidden % self.vision_heads or self.text_hidden % self.text_heads:
            raise ValueError("hidden sizes must be multiples of the head counts")
        return self

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class EvalConfig(ComponentConfig):
    """How models are scored (the same for every run)."""

    batch_size: int = Field(default=64, ge=1, description="Prompts per generate() call / probe batch.")
    caption_tokens: int = Field(default=48, ge=8, description="Longest generated caption, tokens (greedy).")
    answer_tokens: int = Field(default=8, ge=1, description="Longest generated short answer, tokens (greedy).")
    attribute_questions: int = Field(default=1, ge=0, description="Colour / count questions per test scene.")
    probe_noise_step: int = Field(default=999, ge=0, lt=1000,
                                  description="Diffusion step of the probe's destroyed image (MFPO Fig. 1b).")
    probe_items: int | None = Field(default=None, ge=1, description="Probe only the first N test items "
                                                                    "(default: all).")


class RunSpec(ComponentConfig):
    """One preference-training run from the base model."""

    name: str = Field(description="Run id (folder name, table rows refer to it).")
    title: str = Field(description="Row label in the report.")
    loss: LossName = Field(description="trainer loss: mfpo | dpo | mdpo | adavip.")
    weights: tuple[float, float, float] = Field(default=(1.0, 1.0, 1.0),
                                                description="(w_t, w_i, w_m) of MFPO's terms (mfpo loss only).")
    eta: float = Field(default=0.0, description="MFPO's margin eta (eq. 7) / mDPO's anchor delta.")
    curriculum: Literal["easy-to-hard", "none"] = Field(default="easy-to-hard",
                                                        description="MFPO sec. 3.3 stages, or end to end.")
    negatives: NegativesKind = Field(default="mfpo", description="Rejected images it trains on (mdpo / adavip fall "
                                                                 "back to MFPO's where mfpo generate cannot build "
                                                                 "them).")
    noise_step: int = Field(default=500, ge=0, lt=1000, description="Diffusion step t of the noise negatives.")


class TableSpec(ComponentConfig):
    """One table of the report: rows are run names (``base``: the SFT model before preference training)."""

    name: str = Field(description="Table id.")
    title: str = Field(description="Heading, naming the paper table or figure it reproduces.")
    rows: tuple[str, ...] = Field(description="Run names, in row order.")


def default_runs() -> tuple[RunSpec, ...]:
    """DPO, MFPO, mDPO, AdaViP and MFPO's ablations (MFPO Tables 4, 5, 7, 8, Figure 8)."""
    mfpo = RunSpec(name="mfpo", title="MFPO (L_text + L_image + L_margin, regions, t=500, easy-to-hard)",
                   loss="mfpo")
    return (
        RunSpec(name="dpo", title="DPO (text only)", loss="dpo", curriculum="none"),
        mfpo,
        RunSpec(name="mdpo", title="mDPO", loss="mdpo", curriculum="none", negatives="mdpo"),
        RunSpec(name="adavip", title="AdaViP", loss="adavip", curriculum="none", negatives="adavip"),
        RunSpec(name="text-margin", title="L_text + L_margin", loss="mfpo", weights=(1.0, 0.0, 1.0)),
        RunSpec(name="image-margin", title="L_image + L_margin", loss="mfpo", weights=(0.0, 1.0, 1.0)),
        RunSpec(name="text-only", title="L_text only", loss="mfpo", weights=(1.0, 0.0, 0.0)),
        RunSpec(name="eta-0.2", title="margin eta = 0.2", loss="mfpo", eta=0.2),
        RunSpec(name="eta-0.4", title="margin eta = 0.4", loss="mfpo", eta=0.4),
        RunSpec(name="end-to-end", title="end-to-end (no curriculum)", loss="mfpo", curriculum="none"),
        RunSpec(name="global", title="global noise", loss="mfpo", negatives="global"),
        RunSpec(name="random", title="random 20% region", loss="mfpo", negatives="random"),
        *(RunSpec(name=f"t{t}", title=f"t = {t}", loss="mfpo", noise_step=t) for t in (100, 300, 700, 900)),
    )


def default_tables() -> tuple[TableSpec, ...]:
    return (
        TableSpec(name="main", title="Methods from the same base (MFPO Table 1 / Table 9 rows: DPO, mDPO; AdaViP)",
                  rows=("base", "dpo", "mfpo", "mdpo", "adavip")),
        TableSpec(name="table4", title="Loss composition (MFPO Table 4)",
                  rows=("text-margin", "image-margin", "text-only", "mfpo")),
        TableSpec(name="table5", title="Margin eta (MFPO Table 5; 0 is MFPO's)", rows=("mfpo", "eta-0.2", "eta-0.4")),
        TableSpec(name="table7", title="Easy-to-hard vs end-to-end (MFPO Table 7)", rows=("mfpo", "end-to-end")),
        TableSpec(name="table8", title="Image preference data construction (MFPO Table 8)",
                  rows=("global", "random", "mfpo")),
        TableSpec(name="figure8", title="Noise step t of the region noise (MFPO Figure 8)",
                  rows=("t100", "t300", "mfpo", "t700", "t900")),
    )


KIND_COLORS: dict[str, tuple[str, ...]] = {"cup": ("red",), "ball": ("blue",), "car": ("yellow",), "tree": ("green",),
                                           "star": ("orange",), "house": ("purple",), "fish": ("pink",),
                                           "flower": ("white",)}
"""The testbed world's colour of each kind (sized in README, Testbed: "How it was sized")."""


def _default_world() -> WorldConfig:
    return WorldConfig(kind_colors=KIND_COLORS, sft_scenes=3000, questions_per_scene=2, preference_scenes=400,
                       test_scenes=250)


def _default_model() -> ModelConfig:
    return ModelConfig(patch_size=8, vision_layers=4)


def _default_sft() -> SftConfig:
    return SftConfig(learning_rate=1e-3, epochs=1.0, batch_size=32, freeze_vision_tower=True, vision_epochs=3.0,
                     vision_learning_rate=2e-3, vision_batch_size=64, logging_steps=20)


def _default_train() -> TrainConfig:
    return TrainConfig(beta=0.1, learning_rate=1e-4, lora=False, freeze_vision_tower=True, batch_size=8,
                       epochs_per_stage=1, lr_scheduler="constant", max_grad_norm=1.0, report_to="none",
                       disable_tqdm=True)


class TestbedConfig(ComponentConfig):
    """Everything ``mfpo testbed`` runs, fixed before any method is compared (issue 16, "Honesty")."""

    world: WorldConfig = Field(default_factory=_default_world, description="The procedural world and its splits.")
    model: ModelConfig = Field(default_factory=_default_model, description="Sizes of the tiny LLaVA.")
    sft: SftConfig = Field(default_factory=_default_sft, description="Base-model SFT (trainer.sft); its seed is "
                                                                  "the run seed when base_per_seed.")
    train: TrainConfig = Field(default_factory=_default_train,
                               description="Preference training shared by every run (trainer.loop.train); "
                                           "loss, weights, eta, curriculum and seed are set per run.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Scoring, the same for every model.")
    runs: tuple[RunSpec, ...] = Field(default_factory=default_runs, description="Preference-training runs.")
    tables: tuple[TableSpec, ...] = Field(default_factory=default_tables, description="Report tables.")
    seeds: tuple[int, ...] = Field(default=(0, 1, 2), min_length=1,
                                   description="Seeds; every run is repeated per seed (mean, 95% interval).")
    base_per_seed: bool = Field(default=True, description="Train one base model per seed (SFT seed and weight "
                                                          "init = the seed), so intervals include the base's "
                                                          "variance; False: one base (seed 0) for all.")
    quick_runs: tuple[str, ...] = Field(default=("dpo", "mfpo"), description="Runs of --quick.")
    quick_seeds: tuple[int, ...] = Field(default=(0,), description="Seeds of --quick.")
    mdpo: MdpoConfig = Field(default_factory=lambda: MdpoConfig(output_size=64),
                             description="mDPO's crop (mfpo generate's negatives.mdpo): drawn on the model's input "
                                         "square (output_size = model.image_size).")
    adavip: AdavipConfig = Field(
        default_factory=lambda: AdavipConfig(mask_dilation=2),
        description="AdaViP's removal (negatives.adavip): the keyword objects' exact regions as candidates, the "
                    "classical fill, masks grown 2 px (AdaViP's 15 px at 512 px, scaled to 64 px); the CLIP of "
                    "eq. 9 is clip_model.",
    )
    clip_model: str = Field(
        default="tiny-random",
        description="CLIP folder for AdaViP's eq. 9 choice, or tiny-random: `mfpo models tiny`'s random-weight CLIP "
                    "(nothing here trains a CLIP for this world, so the choice among the keyword objects is then "
                    "arbitrary; the removal itself is AdaViP's).",
    )
    workers: int = Field(default=2, ge=1, description="Processes training / scoring runs (and base models) at "
                                                     "once; results do not depend on it.")
    threads: int = Field(default=1, ge=1, description="torch CPU threads per process (1: on a shared machine "
                                                      "two threads of one process wait on each other).")

    @model_validator(mode="after")
    def _check(self) -> TestbedConfig:
        names = [r.name for r in self.runs]
        if len(set(names)) != len(names) or "base" in names:
            raise ValueError("run names must be unique and not 'base'")
        for table in self.tables:
            missing = [r for r in table.rows if r != "base" and r not in names]
            if missing:
                raise ValueError(f"table {table.name!r} names unknown runs {missing}")
        unknown = [r for r in self.quick_runs if r not in names]
        if unknown:
            raise ValueError(f"quick_runs names unknown runs {unknown}")
        return self

    def run(self, name: str) -> RunSpec:
        return next(r for r in self.runs if r.name == name)

    def select(self, quick: bool) -> tuple[tuple[RunSpec, ...], tuple[int, ...]]:
        """(runs, seeds) of a full or --quick testbed."""
        if not quick:
            return self.runs, self.seeds
        return tuple(r for r in self.runs if r.name in self.quick_runs), self.quick_seeds


def load_config_file(path: Path | str, model: type[ComponentConfig]) -> Any:
    """A config of type ``model`` from a JSON file."""
    return model.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
