"""Settings of `mfpo eval`: generation, judges, scorers and the modality probe (typed, documented, strict)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mfpo.config import ComponentConfig
from mfpo.devices import DtypeName


class ModelSpec(ComponentConfig):
    """Where a LLaVA-class model is: a transformers folder (or hub id), optionally with a peft LoRA adapter."""

    model: str = Field(description="LLaVA / LLaVA-NeXT transformers folder (llava-hf layout) or hub id; may also "
                                   "be an adapter folder written by `mfpo train` (its base model is read from "
                                   "adapter_config.json).")
    adapter: str | None = Field(default=None, description="peft LoRA adapter folder (e.g. `mfpo train`'s final/) "
                                                          "applied on top of `model`.")
    name: str | None = Field(default=None, description="Label of this model in answer files and reports "
                                                       "(default: the folder name).")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N.")
    dtype: DtypeName = Field(default="auto", description="Weights dtype: auto (bfloat16 on CUDA, float32 on CPU), "
                                                         "float32, bfloat16, float16.")

    @property
    def label(self) -> str:
        from pathlib import PurePath

        if self.name:
            return self.name
        parts = [p for p in PurePath(self.adapter or self.model).parts if p not in ("final", "/")]
        return parts[-1] if parts else self.model


class GenerationConfig(ComponentConfig):
    """How answers are generated (defaults: greedy, as the benchmarks' reference evaluations of LLaVA use)."""

    batch_size: int = Field(default=8, ge=1, description="Prompts per generate() call (left-padded batch).")
    max_new_tokens: int = Field(default=512, ge=1, description="Longest answer, in tokens.")
    do_sample: bool = Field(default=False, description="Sample instead of greedy decoding.")
    temperature: float = Field(default=1.0, gt=0.0, description="Sampling temperature (with do_sample).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (with do_sample).")
    num_beams: int = Field(default=1, ge=1, description="Beam search width (1: no beam search).")
    seed: int = Field(default=0, ge=0, description="Seed of sampling.")
    prompt_suffix: str = Field(default="", description="Text appended to every question, e.g. LLaVA's POPE "
                                                       "suffix ' Answer the question using a single word or "
                                                       "phrase.'")
    limit: int | None = Field(default=None, ge=1, description="Only the first N prompts (smoke runs).")


class JudgeConfig(ComponentConfig):
    """The judge of MMHal-Bench and LLaVA-Bench: an OpenAI-compatible chat endpoint or a local causal LM."""

    kind: Literal["openai", "hf"] = Field(default="openai", description="openai: any OpenAI-compatible "
                                                                        "/chat/completions endpoint; hf: a "
                                                                        "local Hugging Face causal LM folder.")
    base_url: str = Field(default="https://api.openai.com/v1", description="Endpoint base URL (…/v1); the "
                                                                           "request goes to {base_url}/chat/"
                                                                           "completions.")
    api_key: str | None = Field(default=None, description="Bearer key of the endpoint (env MFPO_JUDGE_API_KEY).")
    model: str = Field(default="gpt-4-0613", description="Judge model name (openai) or folder (hf). MMHal-Bench's "
                                                         "paper used gpt-4-0314.")
    temperature: float | None = Field(default=None, ge=0.0, description="Judge temperature (default: the "
                                                                        "benchmark's own, 0 for MMHal-Bench, 0.2 "
                                                                        "for LLaVA-Bench).")
    max_tokens: int = Field(default=1024, ge=1, description="Longest judge reply, in tokens.")
    timeout_s: float = Field(default=120.0, gt=0.0, description="HTTP timeout of one request, in seconds.")
    max_retries: int = Field(default=6, ge=0, description="Retries of a request on 429, 5xx and connection "
                                                          "errors (exponential backoff).")
    retry_backoff_s: float = Field(default=2.0, ge=0.0, description="First retry delay in seconds; doubles per "
                                                                    "retry.")
    device: str = Field(default="auto", description="Device of a local (hf) judge.")


class ChairConfig(ComponentConfig):
    """CHAIR (Rohrbach et al. 2018) as the Object HalBench evaluations compute it."""

    singularize: Literal["pattern", "lemminflect"] = Field(
        default="pattern",
        description="pattern: pattern.en.singularize as the reference chair.py (the copy vendored in textblob; "
                    "reproduces its known slips such as 'bus' -> 'bu'); lemminflect: noun lemmas instead.",
    )


class AmberConfig(ComponentConfig):
    """AMBER (Wang et al. 2023) generative and discriminative scoring, as its inference.py."""

    similarity_threshold: float = Field(default=0.8, description="Near-synonym threshold of the optional "
                                                                 "similarity function (inference.py: spaCy "
                                                                 "en_core_web_lg similarity > 0.8).")
    similarity: Literal["none", "minilm"] = Field(
        default="none",
        description="none: exact words and relation.json associations only; minilm: cosine similarity of the "
                    "bundled all-MiniLM-L6-v2 embeddings stands in for spaCy's word vectors.",
    )
    yes_no: Literal["exact", "pope"] = Field(
        default="exact",
        description="How discriminative answers are read: exact: only 'Yes' / 'No' (inference.py); pope: POPE's "
                    "rule (first sentence; 'no' / 'not' / 'No' -> no, else yes).",
    )


class ProbeConfig(ComponentConfig):
    """The modality probe (MFPO Fig. 1, AdaViP Fig. 1) over a generated preference dataset."""

    batch_size: int = Field(default=4, ge=1, description="Items per forward pass (5 sequences each).")
    noise_step: int = Field(default=999, ge=0, description="Diffusion timestep of the 'full noise' image (of 1000, "
                                                          "linear DDPM schedule; 999 leaves almost nothing of the "
                                                          "image, as VCD's distorted inputs).")
    seed: int = Field(default=0, ge=0, description="Seed of the noise images.")
    limit: int | None = Field(default=None, ge=1, description="Only the first N dataset items.")

    @model_validator(mode="after")
    def _step(self) -> ProbeConfig:
        if self.noise_step >= 1000:
            raise ValueError("noise_step must be < 1000 (the DDPM schedule has 1000 steps)")
        return self
