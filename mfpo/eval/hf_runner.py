"""The transformers backend of :class:`~mfpo.eval.runner.AnswerRunner`: batched, left-padded ``generate``.

Prompts are built exactly as the trainer builds them (``trainer/collate.py``'s
``prompt_text``): the model's own chat template over one user turn holding the image and the
question, with ``add_generation_prompt=True`` (llava-hf: ``USER: <image>\\n{q} ASSISTANT:``).
The tokenizer pads on the left for generation, so every row's answer starts right after its
own prompt and the batch gives the same tokens as one prompt at a time; only new tokens are
decoded (special tokens dropped, whitespace stripped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mfpo.eval.config import GenerationConfig, ModelSpec
from mfpo.eval.model import load_llava
from mfpo.eval.runner import GenerationRequest


def chat_prompt(processor: Any, question: str) -> str:
    """The templated user turn with one image, ending where the assistant's answer starts."""
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return str(processor.apply_chat_template(conversation, add_generation_prompt=True))


class HFLlavaRunner:
    """LLaVA / LLaVA-NeXT (+ LoRA) answers with ``model.generate``; greedy unless the config samples."""

    def __init__(self, model: Any, processor: Any, device: torch.device, name: str) -> None:
        self.model, self.processor, self.device, self.name = model, processor, device, name

    @classmethod
    def load(cls, spec: ModelSpec) -> HFLlavaRunner:
        model, processor, device = load_llava(spec)
        return cls(model, processor, device, spec.label)

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> list[str]:
        if not requests:
            return []
        tokenizer = self.processor.tokenizer
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            batch = self.processor(images=[r.image for r in requests],
                                   text=[chat_prompt(self.processor, r.question) for r in requests],
                                   return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = side
        batch = {k: v.to(self.device) for k, v in batch.items()}
        options: dict[str, Any] = {"max_new_tokens": config.max_new_tokens, "num_beams": config.num_beams,
                                   "do_sample": config.do_sample,
                                   "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                   else tokenizer.eos_token_id}
        if config.do_sample:
            torch.manual_seed(config.seed)
            options |= {"temperature": config.temperature, "top_p": config.top_p}
        out = self.model.generate(**batch, **options)
        new = out[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]
