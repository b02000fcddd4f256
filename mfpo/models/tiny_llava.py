"""A tiny random-weight LLaVA-1.5, for offline tests and smoke runs of the trainer.

:func:`write_tiny_llava` writes a folder laid out like the ``llava-hf/llava-1.5-*-hf``
checkpoints, which the standard API loads offline::

    model = LlavaForConditionalGeneration.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)  # a LlavaProcessor

- model: ``LlavaForConditionalGeneration`` (:func:`build_tiny_llava_config`): a CLIP vision
  tower (:data:`IMAGE_SIZE` px, :data:`PATCH_SIZE` px patches, hidden 32, 2 layers), the
  2-layer GELU projector and a Llama language model (hidden 64, 2 layers, 4 heads);
  features from the penultimate vision layer without the CLS token, as in LLaVA-1.5, so
  each image takes :data:`IMAGE_TOKENS` positions of the sequence;
- processor: ``CLIPImageProcessor`` (resize + centre crop to :data:`IMAGE_SIZE`, CLIP's
  mean / std), a ``LlamaTokenizer`` (:func:`build_tiny_llava_tokenizer`) and the
  llava-hf chat template :data:`CHAT_TEMPLATE` (``USER: <image>\\n{prompt} ASSISTANT: {answer}``).

The weights are random (seeded), so the model's answers mean nothing; the folder is a
pure function of the seed (about 1.4 MB, written in about half a second once transformers is imported).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mfpo.models.tiny import WORDS, _seeded, greedy_bpe_merges

IMAGE_SIZE = 56
"""Side of the (square) images the vision tower sees, in pixels."""
PATCH_SIZE = 14
"""Side of a vision patch, in pixels (as in CLIP ViT-L/14)."""
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
"""``<image>`` tokens per image after the processor expands it (one per patch; the CLS feature is dropped): 16."""

MAX_LENGTH = 4096
"""Longest sequence, in tokens (the tokenizer's ``model_max_length``, the model's positions), as in Vicuna-7B."""

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
SPACE = "▁"
"""SentencePiece's word-boundary symbol (U+2581), which Llama's tokenizer puts in front of every word."""

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
"""The chat template of ``llava-hf/llava-1.5-7b-hf`` (its ``chat_template.json``), verbatim:
``USER: <image>\\n{question} ASSISTANT: {answer} `` (``ASSISTANT:`` with ``add_generation_prompt``)."""

_CAPTION_WORDS = (
    # mfpo.synth: questions, caption templates, relations, background tones, counts
    "describe this image in detail what do you see the picture can scene shown objects and where are they give "
    "detailed description of is happening shows there contains i features sits spot notice that appears to left "
    "right above below background gradient with subtle texture everything set against slightly textured rest on "
    "warm cool soft pastel sandy misty zero one two three four five six seven eight nine ten"
)
_COMMON_WORDS = (
    "it its it's this that these those here which who whom whose when why how yes no not all any some many much more "
    "most few less other another each every both either neither only own same so than too very just also but or if "
    "because as until while for from by about into through during before after up down out off over again then once "
    "he she we me him her them us my your his our their be been being was were am have has had does did doing "
    "would should could will shall may might must cannot don't isn't there's what's like look looks looking seen "
    "visible appear show showing photo color colors colour colours shape shapes number count side corner edge near "
    "far between beside inside outside around along across toward away sitting standing lying hanging floating "
    "flying holding wearing playing walking running eating drinking made make makes get gets go goes going come "
    "comes take takes put say says said know think want use used find found give gives part parts kind type thing "
    "things something nothing anything someone place time day night light shadow surface object item items answer "
    "question true false correct wrong maybe probably clearly mostly partly fully single pair group several whole "
    "half first second third last next final total amount size sizes area region top bottom center middle upper "
    "lower mainly only"
)
_CAPITALISED = (
    "The This There These That It In On At A An What Where Which Who How Is Are Can Could Do Does Describe Give "
    "Please Yes No I You Everything Notice USER ASSISTANT"
)

LLAVA_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(w for w in " ".join((" ".join(WORDS), _CAPTION_WORDS, _COMMON_WORDS, _CAPITALISED)).split())
)
"""Words the tiny tokenizer keeps as single ``▁word`` tokens: :data:`mfpo.models.tiny.WORDS`, every word of
:mod:`mfpo.synth`'s questions and captions, common English words, and sentence-initial capitalised words."""
LLAVA_BARE_WORDS: tuple[str, ...] = tuple(_CAPITALISED.split())
"""Words the tiny tokenizer also keeps as single tokens without ``▁`` (after a newline, as a question's first word)."""

_SPECIAL = ("<unk>", "<s>", "</s>")
_BYTES = tuple(f"<0x{b:02X}>" for b in range(256))
_CHARS = (SPACE, *(chr(c) for c in range(33, 127)))


def learn_llama_bpe(words: Iterable[str], bare_words: Iterable[str] = ()) -> list[tuple[str, str]]:
    """SentencePiece-style BPE merges that turn each ``▁word`` (for ``words``) and each ``word`` (for
    ``bare_words``, words that follow a newline or a special token) into a single token.

    The same greedy training as :func:`mfpo.models.tiny.learn_bpe` (most frequent adjacent
    pair first, ties to the smallest pair), on ``▁word`` instead of ``word</w>``. No merge
    has ``▁`` inside its right part, so merges never join two words. Deterministic.
    """
    pieces = [SPACE + w for w in words if w] + [w for w in bare_words if w]
    return greedy_bpe_merges([list(w) for w in dict.fromkeys(pieces)])


def llama_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Llama's vocabulary layout: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, the byte-fallback pieces
    ``<0x00>``-``<0xFF>`` at 3-258, one token per merge, then single characters (``▁`` and printable ASCII)."""
    tokens = [*_SPECIAL, *_BYTES, *(a + b for a, b in merges), *_CHARS]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def build_tiny_llava_tokenizer(words: Iterable[str] = LLAVA_WORDS, bare_words: Iterable[str] = LLAVA_BARE_WORDS) -> Any:
    """A ``LlamaTokenizer`` (tokenizers-backed BPE with byte fallback) with merges learned on the given words.

    Each of ``words`` is one ``▁word`` token and each of ``bare_words`` one ``word`` token
    (a question's first word follows ``<image>\\n``, so it has no ``▁``). Other text splits
    into known pieces, single characters or, failing those, UTF-8 bytes (``<0xNN>``), so
    nothing maps to ``<unk>``. Special tokens as in ``llava-hf/llava-1.5-7b-hf``: ``<unk>`` 0,
    ``<s>`` 1 (prepended to every text), ``</s>`` 2, then ``<image>`` and ``<pad>`` as the two
    highest ids; padding on the right (as LLaVA pads for training).
    """
    from tokenizers import AddedToken
    from transformers import LlamaTokenizer

    merges = learn_llama_bpe(words, bare_words)
    tokenizer = LlamaTokenizer(
        vocab=llama_vocab(merges),
        merges=merges,
        add_bos_token=True,
        add_eos_token=False,
        padding_side="right",
        model_max_length=MAX_LENGTH,
    )
    tokenizer.add_special_tokens(
        {
            "additional_special_tokens": [AddedToken(IMAGE_TOKEN, special=True, normalized=False)],
            "pad_token": AddedToken(PAD_TOKEN, special=True, normalized=False),
        }
    )
    return tokenizer


def build_tiny_llava_config(vocab_size: int, image_token_index: int, pad_token_id: int | None = None) -> Any:
    """``LlavaConfig`` of the tiny LLaVA-1.5: 0.13 M parameters plus 128 per vocabulary entry (0.32 M in all).

    Vision: ``CLIPVisionConfig`` (image :data:`IMAGE_SIZE`, patch :data:`PATCH_SIZE`, hidden 32,
    MLP 64, 2 layers, 2 heads). Text: ``LlamaConfig`` (hidden 64, MLP 128, 2 layers, 4 heads,
    :data:`MAX_LENGTH` positions, untied head). Projector: Linear-GELU-Linear. Features from layer -2 without
    CLS (``vision_feature_select_strategy="default"``): :data:`IMAGE_TOKENS` per image.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=MAX_LENGTH,
        pad_token_id=pad_token_id,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_index,
        image_seq_length=IMAGE_TOKENS,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )


def write_tiny_llava(out_dir: Path, seed: int = 0) -> Path:
    """Write the tiny LLaVA-1.5 transformers folder (model, processor, tokenizer, chat template); returns out_dir.

    Loadable offline with ``LlavaForConditionalGeneration.from_pretrained`` and
    ``AutoProcessor.from_pretrained``; the processor expands each ``<image>`` to
    :data:`IMAGE_TOKENS` tokens. Weights: transformers' own initialisation, seeded.
    """
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = build_tiny_llava_tokenizer()
    config = build_tiny_llava_config(len(tokenizer), tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                                     tokenizer.pad_token_id)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return _save(out_dir, seed, LlavaForConditionalGeneration, config, LlavaProcessor, image_processor, tokenizer)


def _save(out_dir: Path, seed: int, model_cls: Any, config: Any, processor_cls: Any, image_processor: Any,
          tokenizer: Any) -> Path:
    """Build the processor (llava-hf settings, :data:`CHAT_TEMPLATE`) and the seeded model; save both."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processor = processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    with _seeded(seed):
        model = model_cls(config).eval()
    processor.save_pretrained(out)
    model.save_pretrained(out)
    return out


NEXT_GRID_PINPOINTS = [[IMAGE_SIZE, IMAGE_SIZE], [IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE],
                       [2 * IMAGE_SIZE, 2 * IMAGE_SIZE]]
"""Any-resolution grid of the tiny LLaVA-NeXT (llava-v1.6 uses multiples of 336 the same way)."""


def write_tiny_llava_next(out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny LLaVA-NeXT (v1.6, any-resolution tiles) folder with the same vision tower, language model,
    tokenizer and chat template as :func:`write_tiny_llava`; loadable with ``AutoModelForImageTextToText`` /
    ``LlavaNextForConditionalGeneration`` and ``AutoProcessor``. Returns out_dir."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tokenizer = build_tiny_llava_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    base = build_tiny_llava_config(len(tokenizer), image_token_id, tokenizer.pad_token_id)
    config = LlavaNextConfig(
        vision_config=base.vision_config,
        text_config=base.text_config,
        image_token_index=image_token_id,
        image_grid_pinpoints=NEXT_GRID_PINPOINTS,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_grid_pinpoints=NEXT_GRID_PINPOINTS,
    )
    return _save(out_dir, seed, LlavaNextForConditionalGeneration, config, LlavaNextProcessor, image_processor,
                 tokenizer)
