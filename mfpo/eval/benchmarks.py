"""Where each benchmark's official files are: the input half of `mfpo eval report --config FILE`.

Every path is the benchmark's own file as its authors ship it; nothing is downloaded. A
benchmark left out (``null``) is not run. Relative paths are taken relative to the config
file's folder (see :meth:`ReportConfig.load`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from mfpo.config import ComponentConfig
from mfpo.eval.config import AmberConfig, ChairConfig, GenerationConfig, JudgeConfig, ProbeConfig


class ObjectHalBenchFiles(ComponentConfig):
    """Object HalBench: COCO images described, scored with CHAIR."""

    questions: Path = Field(description="Prompt file, e.g. RLAIF-V's obj_halbench_300_with_image.jsonl (image_id, "
                                        "question, image).")
    image_dir: Path | None = Field(default=None, description="Folder of the images (default: the prompt file's).")
    instances: list[Path] = Field(min_length=1, description="COCO instances_*2014.json file(s).")
    captions: list[Path] = Field(min_length=1, description="COCO captions_*2014.json file(s).")
    chair: ChairConfig = Field(default_factory=ChairConfig, description="CHAIR options.")


class PopeFiles(ComponentConfig):
    """POPE: yes/no object-existence questions, one label file per split."""

    splits: list[Path] = Field(min_length=1, description="Split files (coco_pope_random.json, …_popular.json, "
                                                         "…_adversarial.json): questions and labels.")
    image_dir: Path = Field(description="Folder of the COCO val2014 images the splits name.")


class AmberFiles(ComponentConfig):
    """AMBER: generative and discriminative queries with its annotation files."""

    queries: Path = Field(description="query_all.json (or query_generative.json / query_discriminative*.json).")
    image_dir: Path = Field(description="Folder of AMBER_<id>.jpg.")
    annotations: Path = Field(description="data/annotations.json.")
    relation: Path = Field(description="data/relation.json.")
    safe_words: Path = Field(description="data/safe_words.txt.")
    amber: AmberConfig = Field(default_factory=AmberConfig, description="AMBER options.")


class MMHalFiles(ComponentConfig):
    """MMHal-Bench: 96 questions judged with its rubric."""

    template: Path = Field(description="response_template.json.")
    image_dir: Path = Field(description="Folder of the images (file names of the template's image_src URLs).")


class LlavaBenchFiles(ComponentConfig):
    """LLaVA-Bench (in-the-wild or COCO): answers judged against reference answers."""

    questions: Path = Field(description="questions.jsonl.")
    context: Path = Field(description="context.jsonl (captions per image).")
    reference: Path = Field(description="Reference answers, e.g. answers_gpt4.jsonl.")
    image_dir: Path = Field(description="Folder of the images.")


class ReportConfig(ComponentConfig):
    """Benchmarks to run, generation settings, the judge and the probe of one `mfpo eval report`."""

    object_halbench: ObjectHalBenchFiles | None = Field(default=None, description="Object HalBench (CHAIR).")
    pope: PopeFiles | None = Field(default=None, description="POPE.")
    amber: AmberFiles | None = Field(default=None, description="AMBER.")
    mmhal: MMHalFiles | None = Field(default=None, description="MMHal-Bench (needs `judge`).")
    llava_bench: LlavaBenchFiles | None = Field(default=None, description="LLaVA-Bench (needs `judge`).")
    probe_dataset: Path | None = Field(default=None, description="Dataset folder made by `mfpo generate` for the "
                                                                 "modality probe.")
    probe: ProbeConfig = Field(default_factory=ProbeConfig, description="Probe options.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Generation options.")
    judge: JudgeConfig | None = Field(default=None, description="Judge of MMHal-Bench and LLaVA-Bench.")

    @classmethod
    def load(cls, path: Path, overrides: dict[str, Any] | None = None) -> ReportConfig:
        """Read a JSON config; relative paths are resolved against the file's folder."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data |= overrides or {}
        config = cls.model_validate(data)
        return config.resolved(Path(path).resolve().parent)

    def resolved(self, root: Path) -> ReportConfig:
        """A copy with every relative path joined to ``root``."""
        def fix(value: Any) -> Any:
            if isinstance(value, Path):
                return value if value.is_absolute() else root / value
            if isinstance(value, list):
                return [fix(v) for v in value]
            if isinstance(value, ComponentConfig):
                return value.model_copy(update={k: fix(getattr(value, k)) for k in type(value).model_fields})
            return value

        fixed: ReportConfig = fix(self)
        return fixed

    @property
    def needs_judge(self) -> bool:
        return self.mmhal is not None or self.llava_bench is not None
