"""Tiny random-weight models of the real architectures, for offline tests and smoke runs.

Each writer builds the *real* model class with a tiny configuration, seeds it,
and saves it in the format the production code loads, so tests exercise the same
code paths as the full-size checkpoints:

- :func:`write_tiny_sam`: a segment-anything ``Sam`` (:func:`build_tiny_sam`, type
  :data:`TINY_SAM_TYPE`) saved as a plain state dict, like ``sam_vit_h_4b8939.pth``.
- :func:`write_tiny_grounding_dino`: a transformers folder with
  ``GroundingDinoForObjectDetection`` + ``GroundingDinoProcessor`` (Swin backbone, BERT
  text encoder, WordPiece tokenizer with the special-token ids of bert-base-uncased).
- :func:`write_tiny_owlv2`: a transformers folder with ``Owlv2ForObjectDetection`` +
  ``Owlv2Processor`` (CLIP byte-level BPE tokenizer learned on :data:`WORDS`).
- :func:`write_tiny_models`: all three under one folder.
- :func:`write_tiny_clip`: a transformers folder with ``CLIPModel`` + ``CLIPProcessor`` (AdaViP's scorer).
- :func:`write_tiny_sd_inpainting`: a diffusers ``StableDiffusionInpaintPipeline`` folder (9-channel UNet,
  ``AutoencoderKL``, ``CLIPTextModel``, tokenizer, scheduler), AdaViP's object removal;
  :func:`write_tiny_negative_models` writes both.

The weights are random (seeded), so the detections and masks mean nothing; they are,
however, not degenerate: the detectors score some boxes above low thresholds and SAM
gives masks that are neither empty nor full. Everything is a pure function of the seed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

TINY_SAM_TYPE = "vit_tiny"
"""``sam_type`` of :func:`build_tiny_sam` (see :mod:`mfpo.segmentation.sam`)."""

SAM_FILE_NAME = "sam_vit_tiny.pth"
GROUNDING_DINO_DIR = "grounding-dino"
OWLV2_DIR = "owlv2"
_GROUNDING_DINO_OUTPUT_SCALE = 0.25

_SYNTH_NOUNS = (
    "ball balls cup cups box boxes tree trees house houses car cars star stars flower flowers fish "
    "umbrella umbrellas kite kites balloon balloons"
)
_COLOURS = (
    "red orange yellow green blue purple pink white black gray grey brown gold silver beige cyan magenta violet "
    "navy teal tan colorful"
)
_OBJECTS = (
    "person people man men woman women boy girl child children baby bicycle bike motorcycle airplane plane bus "
    "train truck boat traffic light fire hydrant stop sign parking meter bench bird birds cat cats dog dogs horse "
    "sheep cow elephant bear zebra giraffe backpack handbag tie suitcase frisbee skis snowboard sports baseball bat "
    "glove skateboard surfboard tennis racket bottle wine glass fork knife spoon bowl banana apple sandwich broccoli "
    "carrot hot pizza donut cake chair couch potted plant bed dining table toilet tv laptop mouse remote keyboard "
    "cell phone microwave oven toaster sink refrigerator book books clock vase scissors teddy hair drier toothbrush "
    "shirt hat cap jacket coat shoe shoes boots pants jeans dress skirt window door wall floor ceiling roof road "
    "street sidewalk sky cloud clouds sun moon grass water sea ocean beach sand river lake mountain hill rock snow "
    "building tower bridge fence pole lamp plate desk shelf leaf leaves branch hand head face eye eyes nose mouth "
    "arm leg foot wheel tire mirror pillow blanket curtain rug basket bag bucket bread egg cheese fruit food "
    "vegetable tomato lemon flag field garden park forest picture photo image animal vehicle toy"
)
_ADJECTIVES = (
    "big small large little tiny huge tall short long round square wooden metal plastic old new young bright dark "
    "striped spotted shiny wet dry empty full open closed left right top bottom front back middle center "
    "happy"
)
_FUNCTION_WORDS = "a an the of in on at with and to is are next near behind above below under one two three four five"

WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        w for w in " ".join((_SYNTH_NOUNS, _COLOURS, _OBJECTS, _ADJECTIVES, _FUNCTION_WORDS)).split() if w.isalpha()
    )
)
"""Lowercase English words that both tiny tokenizers keep as single tokens (~330)."""

_BERT_SPECIAL = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
_BERT_FIRST_WORD, _BERT_FIRST_CHAR = 104, 999
# bert-base-uncased keeps printable ASCII (less letters' capitals) at 999..1066; GroundingDINO hard-codes
# [CLS] 101, [SEP] 102, "." 1012 and "?" 1029 as phrase delimiters, so the tiny vocab keeps those ids.
_BERT_CHARS = (
    [chr(c) for c in range(33, 65)] + [chr(c) for c in range(91, 97)] + [chr(c) for c in range(97, 123)] + list("{|}~")
)


# -- segment-anything -------------------------------------------------------------------------


def build_tiny_sam() -> Any:
    """An untrained tiny SAM: the ``vit_tiny`` architecture of :mod:`mfpo.segmentation.architectures`."""
    from mfpo.segmentation.architectures import build_sam_architecture

    return build_sam_architecture("vit_tiny")


def write_tiny_sam(path: Path, seed: int = 0) -> Path:
    """Save a seeded :func:`build_tiny_sam` as a plain state dict (the format of ``sam_vit_*.pth``); returns path.

    PyTorch's default initialisation is kept as is: it already gives masks that are
    neither empty nor full for box prompts (typically 20-80 % of the image; see
    ``tests/test_tiny_models.py``), though they barely depend on the box or the image. About 1 MB.
    """
    with _seeded(seed):
        model = build_tiny_sam()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


# -- GroundingDINO ----------------------------------------------------------------------------


def bert_vocab() -> list[str]:
    """WordPiece vocabulary (1,103 tokens) in bert-base-uncased's layout.

    [PAD] 0, [unused0..98] 1-99, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, :data:`WORDS`
    from 104 (filled with [unusedN] up to 998), printable ASCII 999-1066 (so "." is 1012
    and "?" 1029, as GroundingDINO expects), then ``##a``-``##z`` and ``##0``-``##9`` so any
    lowercase word tokenizes without [UNK].
    """
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [w for w in WORDS if w not in _BERT_CHARS]
    if len(words) > _BERT_FIRST_CHAR - _BERT_FIRST_WORD:
        raise ValueError(f"{len(words)} words do not fit between ids {_BERT_FIRST_WORD} and {_BERT_FIRST_CHAR}")
    vocab += words
    vocab += [f"[unused{i}]" for i in range(99, 99 + _BERT_FIRST_CHAR - len(vocab))]
    vocab += _BERT_CHARS
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    assert all(vocab[i] == t for t, i in _BERT_SPECIAL.items()) and vocab[1012] == "." and vocab[1029] == "?"
    return vocab


def write_tiny_grounding_dino(out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny GroundingDINO transformers folder (about 2 MB); returns out_dir.

    Loadable offline with ``AutoProcessor`` / ``AutoModelForZeroShotObjectDetection``.
    Model: Swin backbone (embed dim 16, depths 1-1-1-1, stages 2-4 out), BERT text
    encoder (hidden 32, 1 layer, 2 heads, vocab :func:`bert_vocab`), d_model 32, 1 encoder
    and 2 decoder layers (FFN 64, 2 heads, 2 sampling points, 4 feature levels),
    30 queries. Processor: images resized to shortest edge 96 / longest 128, the
    tokenizer's ``vocab.txt`` is written to out_dir as well.
    """
    from transformers import (
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = bert_vocab()
    (out / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    # From the folder's vocab.txt; in transformers 5 BertTokenizer is the tokenizers-backed (fast) class.
    tokenizer = BertTokenizer.from_pretrained(out, model_max_length=256)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 96, "longest_edge": 128})
    backbone = {
        "model_type": "swin",
        "image_size": 128,
        "patch_size": 4,
        "embed_dim": 16,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 2, 2, 4],
        "window_size": 7,
        "out_indices": [2, 3, 4],
    }
    text = {
        "model_type": "bert",
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 256,
    }
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        num_feature_levels=4,
        num_queries=30,
        max_text_len=256,
    )
    with _seeded(seed):
        model = GroundingDinoForObjectDetection(config).eval()
    with torch.no_grad():
        # The class logits are raw dot products of 32-dim query and text states (no temperature), which at
        # random init reach |logit| ~ 15 (every score ~0 or ~1). Shrinking the decoder's output LayerNorm
        # (used only by the heads) brings them to |logit| ~ 2, so scores spread over (0, 1).
        model.model.decoder.layer_norm.weight.mul_(_GROUNDING_DINO_OUTPUT_SCALE)
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    model.save_pretrained(out)
    return out


# -- OWLv2 ------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable character map (the byte-level alphabet, in CLIP's vocab order)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def learn_bpe(words: Iterable[str]) -> list[tuple[str, str]]:
    """CLIP-style BPE merges (``</w>`` ends a word) that turn every word into a single token.

    Greedy BPE training: repeatedly merge the most frequent adjacent pair (ties: the
    smallest pair), so applying the merges by rank, as the tokenizer does, reproduces
    the training segmentation. Deterministic; words must be byte-level printable (ASCII).
    """
    return greedy_bpe_merges([[*w[:-1], w[-1] + "</w>"] for w in dict.fromkeys(words) if w])


def greedy_bpe_merges(seqs: list[list[str]]) -> list[tuple[str, str]]:
    """Merges of greedy BPE training on symbol sequences: the most frequent adjacent pair first (ties: the
    smallest pair), until every sequence is one symbol."""
    merges: list[tuple[str, str]] = []
    while True:
        counts: Counter[tuple[str, str]] = Counter()
        for s in seqs:
            counts.update(pairwise(s))
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        seqs = [_merge_pair(s, best) if len(s) > 1 else s for s in seqs]


def clip_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary layout: 256 byte symbols, the same with ``</w>``, one token per merge, then
    ``<|startoftext|>`` and ``<|endoftext|>`` as the two highest ids (OWLv2 pools the text at the argmax id)."""
    alphabet = list(_bytes_to_unicode().values())
    tokens = [*alphabet, *(c + "</w>" for c in alphabet), *(a + b for a, b in merges)]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def write_tiny_owlv2(out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny OWLv2 transformers folder (about 0.5 MB); returns out_dir.

    Loadable offline with ``AutoProcessor`` / ``AutoModelForZeroShotObjectDetection``.
    Model: ViT vision tower (128 px, 16 px patches -> 8x8 = 64 boxes per image, hidden 32,
    2 layers, 2 heads, MLP 64) and CLIP text tower (hidden 32, 2 layers, 2 heads, MLP 64,
    16 positions), projection 32. Processor: ``Owlv2ImageProcessor`` (pad to square,
    resize to 128x128) and a ``CLIPTokenizer`` whose ``vocab.json`` / ``merges.txt`` hold
    the 512 byte symbols plus merges learned on :data:`WORDS` (each word is one
    ``word</w>`` token; other text falls back to bytes, never to the unknown token);
    pad token ``!`` (id 0) and 16 tokens per query, as in google/owlv2-base-patch16.
    """
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merges = learn_bpe(WORDS)
    vocab = clip_vocab(merges)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(out, pad_token="!", model_max_length=16)
    image_processor = Owlv2ImageProcessor(size={"height": 128, "width": 128})
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "pad_token_id": vocab["!"],
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 128,
        "patch_size": 16,
    }
    config = Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)
    with _seeded(seed):
        model = Owlv2ForObjectDetection(config).eval()
        # transformers initialises these heads' Linear layers with N(0, initializer_factor = 1.0), which
        # saturates every box to the image border and every score to 0 or 1; PyTorch's default init keeps
        # boxes near their patch prior and logits within about +-3.
        for head in (model.box_head, model.class_head, model.objectness_head):
            for layer in head.modules():
                if isinstance(layer, torch.nn.Linear):
                    layer.reset_parameters()
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    model.save_pretrained(out)
    return out


# -- CLIP (AdaViP's eq. 9 scorer) --------------------------------------------------------------

CLIP_DIR = "clip"
INPAINTING_DIR = "sd-inpainting"


def write_clip_tokenizer(out_dir: Path, max_length: int) -> Any:
    """A ``CLIPTokenizer`` whose ``vocab.json`` / ``merges.txt`` (written to out_dir) hold the byte symbols plus
    merges learned on :data:`WORDS`, as :func:`write_tiny_owlv2`'s; pad token ``<|endoftext|>`` as in
    openai/clip-vit-*. Returns the tokenizer."""
    from transformers import CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merges = learn_bpe(WORDS)
    vocab = clip_vocab(merges)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return CLIPTokenizer.from_pretrained(out, pad_token="<|endoftext|>", model_max_length=max_length)


def tiny_clip_text_config(vocab: dict[str, int], max_positions: int) -> dict[str, Any]:
    """The text tower of the tiny CLIPs: hidden 32, MLP 64, 2 layers, 2 heads, ``max_positions`` tokens."""
    return {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": max_positions,
        "pad_token_id": vocab["<|endoftext|>"],
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
    }


def write_tiny_clip(out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny ``CLIPModel`` + ``CLIPProcessor`` transformers folder (about 0.5 MB); returns out_dir.

    Loadable offline with ``CLIPModel.from_pretrained`` / ``AutoProcessor.from_pretrained``, like
    openai/clip-vit-large-patch14. Vision: ViT (32 px, 8 px patches, hidden 32, 2 layers, 2 heads); text:
    :func:`tiny_clip_text_config` with CLIP's 77 positions; projection 16. Processor: ``CLIPImageProcessor``
    (shortest edge 32, centre crop 32, CLIP's mean/std) and :func:`write_clip_tokenizer`.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    out = Path(out_dir)
    tokenizer = write_clip_tokenizer(out, max_length=77)
    vocab = tokenizer.get_vocab()
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    config = CLIPConfig(text_config=tiny_clip_text_config(vocab, 77), vision_config=vision, projection_dim=16)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    with _seeded(seed):
        model = CLIPModel(config).eval()
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    model.save_pretrained(out)
    return out


# -- Stable Diffusion inpainting (AdaViP's object removal) ----------------------------------------


def write_tiny_sd_inpainting(out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny ``StableDiffusionInpaintPipeline`` diffusers folder (about 2 MB); returns out_dir.

    Loadable offline with ``AutoPipelineForInpainting.from_pretrained``, like
    stable-diffusion-v1-5/stable-diffusion-inpainting: ``UNet2DConditionModel`` with 9 input channels
    (4 latent + 1 mask + 4 masked-image latent) and 4 output, blocks (16, 32) (one cross-attention block,
    cross-attention dim 32); ``AutoencoderKL`` with four blocks (8, 16, 32, 32), so latents are at 1/8 of the
    image side with 4 channels, as SD's; ``CLIPTextModel`` (:func:`tiny_clip_text_config`, 16 positions) +
    :func:`write_clip_tokenizer`; ``PNDMScheduler`` with SD-1.5's settings; no safety checker.
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = Path(out_dir)
    tokenizer = write_clip_tokenizer(out / "tokenizer", max_length=16)
    text_config = CLIPTextConfig(**tiny_clip_text_config(tokenizer.get_vocab(), 16))
    with _seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 32, 32), latent_channels=4,
            layers_per_block=1, norm_num_groups=8, sample_size=64,
        )
        text_encoder = CLIPTextModel(text_config)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(out)  # type: ignore[attr-defined]  # DiffusionPipeline's, untyped in diffusers
    return out


def write_tiny_negative_models(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """The models of the rejected-image constructors: ``{"clip": out_dir/clip, "inpainting": out_dir/sd-inpainting}``
    (the tiny LLaVA for MBPO is :func:`mfpo.models.tiny_llava.write_tiny_llava`)."""
    out = Path(out_dir)
    return {"clip": write_tiny_clip(out / CLIP_DIR, seed),
            "inpainting": write_tiny_sd_inpainting(out / INPAINTING_DIR, seed)}


# -- all --------------------------------------------------------------------------------------


def write_tiny_models(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write all three tiny models under out_dir (about 3.5 MB, a few seconds on CPU).

    Returns ``{"grounding_dino": out_dir/grounding-dino, "owlv2": out_dir/owlv2,
    "sam": out_dir/sam_vit_tiny.pth}``.
    """
    out = Path(out_dir)
    return {
        "grounding_dino": write_tiny_grounding_dino(out / GROUNDING_DINO_DIR, seed),
        "owlv2": write_tiny_owlv2(out / OWLV2_DIR, seed),
        "sam": write_tiny_sam(out / SAM_FILE_NAME, seed),
    }


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded, leaving the caller's RNG state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
