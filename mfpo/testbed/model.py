"""The testbed's base architecture: ``mfpo models tiny-llava``'s LLaVA-1.5, sized to learn the world.

Same classes, processor and chat template as :mod:`mfpo.models.tiny_llava` (``LlavaForConditionalGeneration``:
CLIP vision tower, features of layer -2 without CLS, Linear-GELU-Linear projector, Llama language model;
``LlavaProcessor`` with ``CLIPImageProcessor``, the tiny ``LlamaTokenizer`` and llava-hf's chat template),
with the sizes of :class:`~mfpo.testbed.config.ModelConfig` and the world's words as single tokens. The
weights are random (seeded): the base model is trained from scratch by SFT (:mod:`trainer.sft`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mfpo.models.tiny import _seeded
from mfpo.models.tiny_llava import (
    CHAT_TEMPLATE,
    IMAGE_TOKEN,
    LLAVA_BARE_WORDS,
    LLAVA_WORDS,
    MAX_LENGTH,
    build_tiny_llava_tokenizer,
)
from mfpo.testbed.config import ModelConfig


def llava_config(config: ModelConfig, vocab_size: int, image_token_index: int, pad_token_id: int | None) -> Any:
    """``LlavaConfig`` with the testbed's sizes (MLPs 4x hidden in the vision tower, 2.75x (SwiGLU) in Llama)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=config.vision_hidden, intermediate_size=4 * config.vision_hidden,
                              num_hidden_layers=config.vision_layers, num_attention_heads=config.vision_heads,
                              image_size=config.image_size, patch_size=config.patch_size,
                              projection_dim=config.vision_hidden)
    text = LlamaConfig(vocab_size=vocab_size, hidden_size=config.text_hidden,
                       intermediate_size=round(2.75 * config.text_hidden), num_hidden_layers=config.text_layers,
                       num_attention_heads=config.text_heads, num_key_value_heads=config.text_heads,
                       max_position_embeddings=MAX_LENGTH, pad_token_id=pad_token_id, bos_token_id=1,
                       eos_token_id=2, tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_index,
                       image_seq_length=config.image_tokens, projector_hidden_act="gelu",
                       vision_feature_select_strategy="default", vision_feature_layer=-2)


def write_testbed_llava(out_dir: Path, config: ModelConfig, words: Sequence[str], seed: int = 0) -> Path:
    """Write a random-weight LLaVA-1.5 folder (model, processor) loadable with ``from_pretrained``; returns it.

    ``words`` (the world's vocabulary) become single tokens besides :data:`LLAVA_WORDS`.
    """
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = build_tiny_llava_tokenizer(words=tuple(dict.fromkeys((*LLAVA_WORDS, *words))),
                                           bare_words=tuple(dict.fromkeys((*LLAVA_BARE_WORDS,
                                                                           *(w.capitalize() for w in words)))))
    llava = llava_config(config, len(tokenizer), tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         tokenizer.pad_token_id)
    image_processor = CLIPImageProcessor(size={"shortest_edge": config.image_size},
                                         crop_size={"height": config.image_size, "width": config.image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=config.patch_size,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _seeded(seed):
        model = LlavaForConditionalGeneration(llava).eval()
    processor.save_pretrained(out)
    model.save_pretrained(out)
    return out


def parameter_counts(model: Any) -> dict[str, int]:
    """Parameters of the vision tower, projector and language model (the report's model line)."""
    counts = {"vision_tower": 0, "projector": 0, "language_model": 0}
    for name, p in model.named_parameters():
        key = ("vision_tower" if "vision_tower" in name else "projector" if "projector" in name
               else "language_model")
        counts[key] += p.numel()
    counts["total"] = sum(counts.values())
    return counts
