"""MBPO's adversarial hard negatives (Liu et al. 2025, abstract): attack the image, keep the model's answer.

MBPO "constructs a more effective offline preference dataset by generating hard negatives, i.e.
rejected responses misled by LLM biases due to limited usage of visual information, through
adversarial perturbation of input images". Per item (Q, I, y_w):

1. the model's view of the image, x0 (:meth:`LlavaAttacker.model_view`: the processor's resize and
   centre crop, 8-bit, (S, S, 3), S = 336 for LLaVA-1.5);
2. PGD (Madry et al. 2018) in [0, 1] pixel space: x_{k+1} = Proj_{||x - x0||_inf <= eps, [0,1]}
   (x_k + alpha sign(grad L(x_k))), from a uniform start in the eps-ball (``random_start``), for
   ``steps`` steps; eps and alpha are in 8-bit levels and the start is drawn on the 8-bit grid, so
   with whole-level settings every iterate is an 8-bit image and the stored image is exactly the
   one attacked (:func:`pgd_step`, :func:`project`);
3. the policy's greedy answer to Q on the attacked image -> the rejected *response*; the chosen answer
   and the original image are kept by the record, the attacked image is kept too (an image negative).

The objective L (``objective``; MBPO's text gives none, this is our reading of the abstract):

- ``features`` (default): L = ||F(x) - F(x0)||^2 / ||F(x0)||^2, F = the projector's output for the
  image tokens (the visual evidence exactly as the LLM reads it; :meth:`LlavaAttacker.image_features`).
  It removes the image's information at the interface to the LLM without saying what the answer
  should become, so what the model then writes is what its language prior supplies for Q: the
  abstract's "responses misled by LLM biases due to limited usage of visual information". It needs
  only the vision tower and the projector (no LLM backward), so it is also the cheaper attack.
- ``answer``: L = the mean negative log-likelihood of y_w given (Q, x) (:meth:`LlavaAttacker.answer_nll`):
  it pushes the model away from the correct answer, which also lowers the use of the image but
  may steer the answer toward whatever the perturbation itself evokes (an adversarial
  hallucination rather than a language-prior one); it needs the full model's backward.

Batching: items are attacked and answered in batches of ``batch_size``; each item's loss depends only
on its own image (ViT and projector act per image), so a batch's gradient is the items' gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from mfpo.devices import DtypeName
from mfpo.negatives.base import NegativeRequest, NegativeResult, check_image, derive_seed, negatives_error
from mfpo.negatives.config import MbpoConfig

UInt8Image = npt.NDArray[np.uint8]


class PolicyLoadError(ValueError):
    """The policy model cannot be loaded, or is not an architecture the attack supports."""


def project(x: torch.Tensor, x0: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Proj onto {||x - x0||_inf <= epsilon} intersected with [0, 1]^n (element-wise clamps), any shape."""
    return torch.minimum(torch.maximum(x, x0 - epsilon), x0 + epsilon).clamp(0.0, 1.0)


def pgd_step(x: torch.Tensor, grad: torch.Tensor, x0: torch.Tensor, step_size: float, epsilon: float) -> torch.Tensor:
    """One ascent step of PGD: Proj(x + step_size * sign(grad)) (Madry et al. 2018, eq. for L-inf)."""
    return project(x + step_size * grad.sign(), x0, epsilon)


def random_start(x0: torch.Tensor, epsilon_levels: float, seeds: Sequence[int]) -> torch.Tensor:
    """x0 + d projected, d uniform on the 8-bit grid {-e..e}/255 (e = floor(epsilon_levels)), per image from
    its own seed (numpy PCG64): x0 float (B, 3, S, S) in [0, 1]."""
    e = int(np.floor(epsilon_levels))
    starts = []
    for seed in seeds:
        rng = np.random.Generator(np.random.PCG64(derive_seed(seed, "mbpo-start")))
        starts.append(rng.integers(-e, e + 1, size=tuple(x0.shape[1:]), dtype=np.int64))
    d = torch.from_numpy(np.stack(starts)).to(device=x0.device, dtype=x0.dtype) / 255.0
    return project(x0 + d, x0, epsilon_levels / 255.0)


def to_uint8(x: torch.Tensor) -> list[UInt8Image]:
    """float (B, 3, S, S) in [0, 1] -> B uint8 (S, S, 3) images, round(255 x)."""
    return list((x.detach() * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())


class LlavaAttacker:
    """The policy (LLaVA-1.5, ``LlavaForConditionalGeneration``) loaded once with its processor, through the
    loader of the trainer's policy and ``mfpo eval`` (:func:`mfpo.eval.model.load_llava`); attacks and answers
    batches of items with the settings passed per call."""

    def __init__(self, model_path: str, device: str = "auto", dtype: DtypeName = "auto") -> None:
        from mfpo.eval.config import ModelSpec
        from mfpo.eval.model import ModelLoadError, load_llava

        try:
            self.model, self.processor, self.device = load_llava(ModelSpec(model=model_path, device=device,
                                                                           dtype=dtype))
        except ModelLoadError as exc:
            raise PolicyLoadError(str(exc)) from exc
        model_type = getattr(self.model.config, "model_type", None)
        if model_type != "llava":
            raise PolicyLoadError(
                f"MBPO's attack supports LLaVA-1.5 checkpoints (model_type 'llava'); {model_path!r} is {model_type!r}"
            )
        self.model.requires_grad_(False)
        image_processor = self.processor.image_processor
        self.mean = torch.tensor(image_processor.image_mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(image_processor.image_std, device=self.device).view(1, 3, 1, 1)
        # transformers >= 4.52 keeps the towers in model.model (LlavaModel); earlier versions on the model itself
        inner = self.model.model if hasattr(getattr(self.model, "model", None), "vision_tower") else self.model
        self.vision_tower, self.projector = inner.vision_tower, inner.multi_modal_projector
        self.weight_dtype = next(self.model.parameters()).dtype

    # -- the model's inputs -----------------------------------------------------------------------

    def model_view(self, image: UInt8Image) -> UInt8Image:
        """uint8 (S, S, 3): the pixels the vision tower sees (the processor's resize + centre crop, before
        rescaling and normalisation)."""
        out = self.processor.image_processor(images=image, do_rescale=False, do_normalize=False, return_tensors="pt")
        pixels = out["pixel_values"][0].float().round().clamp(0, 255).to(torch.uint8)
        return pixels.permute(1, 2, 0).numpy()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels (B, 3, S, S) -> the processor's pixel_values ((x - mean) / std), in the weights' dtype."""
        return ((x - self.mean) / self.std).to(self.weight_dtype)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """F(x): the projector's output for the image tokens, float32 (B, tokens, hidden), as LLaVA computes it
        (``vision_feature_layer`` hidden state(s), CLS dropped for the ``default`` strategy, projector)."""
        cfg = self.model.config
        out = self.vision_tower(self.normalize(x), output_hidden_states=True)
        layers = cfg.vision_feature_layer if isinstance(cfg.vision_feature_layer, list) else [cfg.vision_feature_layer]
        states = [out.hidden_states[layer] for layer in layers]
        if cfg.vision_feature_select_strategy == "default":
            states = [s[:, 1:] for s in states]
        return self.projector(torch.cat(states, dim=-1)).float()

    def prompts(self, questions: Sequence[str]) -> list[str]:
        from mfpo.eval.hf_runner import chat_prompt

        return [chat_prompt(self.processor, q) for q in questions]

    def answer_inputs(self, views: Sequence[UInt8Image], questions: Sequence[str], answers: Sequence[str]) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        """(input_ids, attention_mask, labels), each (B, T) on the device, of "prompt answer" for each item: the
        model's chat template with one image (as the trainer builds it), right-padded; labels are -100 on the
        prompt (the tokens it shares with the prompt alone) and on padding."""
        prompts = self.prompts(questions)
        tokenizer = self.processor.tokenizer
        side, tokenizer.padding_side = tokenizer.padding_side, "right"
        try:
            full = self.processor(images=list(views), text=[p + " " + a for p, a in zip(prompts, answers, strict=True)],
                                  return_tensors="pt", padding=True)
            alone = self.processor(images=list(views), text=prompts, return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = side
        labels = full["input_ids"].clone()
        for b in range(len(prompts)):
            p = alone["input_ids"][b][alone["attention_mask"][b].bool()].tolist()
            f = full["input_ids"][b].tolist()
            shared = next((i for i, (u, v) in enumerate(zip(p, f, strict=False)) if u != v), min(len(p), len(f)))
            labels[b, :shared] = -100
        labels[full["attention_mask"] == 0] = -100
        return full["input_ids"].to(self.device), full["attention_mask"].to(self.device), labels.to(self.device)

    def answer_nll(self, x: torch.Tensor, inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Mean negative log-likelihood per answer token, float32 (B,), of :meth:`answer_inputs` given the images
        x (float (B, 3, S, S) in [0, 1])."""
        ids, mask, labels = inputs
        logits = self.model(input_ids=ids, attention_mask=mask, pixel_values=self.normalize(x)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = labels[:, 1:]
        valid = target != -100
        picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
        return -(picked.sum(dim=1) / valid.sum(dim=1).clamp(min=1))

    # -- the attack -------------------------------------------------------------------------------

    def objective(self, x: torch.Tensor, context: Any, objective: str) -> torch.Tensor:
        """Per-item L(x), float32 (B,) (the module docstring's ``features`` or ``answer``); ``context`` is F(x0)
        for ``features``, :meth:`answer_inputs` for ``answer``."""
        if objective == "features":
            f = self.image_features(x)
            return ((f - context) ** 2).sum(dim=(1, 2)) / (context**2).sum(dim=(1, 2)).clamp(min=1e-12)
        return self.answer_nll(x, context)

    def attack(self, views: Sequence[UInt8Image], seeds: Sequence[int], questions: Sequence[str],
               answers: Sequence[str], cfg: MbpoConfig) -> tuple[list[UInt8Image], list[float], list[float]]:
        """PGD with ``cfg``'s budget on a batch of model views (uint8 (S, S, 3)); returns the attacked views
        (uint8 (S, S, 3)), L(x0) and L(attacked view) per item. Gradients are on even when the caller runs under
        ``torch.inference_mode`` / ``no_grad``."""
        with torch.inference_mode(False), torch.enable_grad():
            return self._attack(views, seeds, questions, answers, cfg)

    def _attack(self, views: Sequence[UInt8Image], seeds: Sequence[int], questions: Sequence[str],
                answers: Sequence[str], cfg: MbpoConfig) -> tuple[list[UInt8Image], list[float], list[float]]:
        x0 = torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2).to(self.device, torch.float32) / 255.0
        eps, alpha = cfg.epsilon / 255.0, cfg.step_size / 255.0
        with torch.no_grad():
            context = self.image_features(x0) if cfg.objective == "features" else self.answer_inputs(
                views, questions, answers)
            start_loss = self.objective(x0, context, cfg.objective)
        x = random_start(x0, cfg.epsilon, seeds) if cfg.random_start else x0.clone()
        for _ in range(cfg.steps):
            x.requires_grad_(True)
            loss = self.objective(x, context, cfg.objective).sum()
            (grad,) = torch.autograd.grad(loss, x)
            x = pgd_step(x.detach(), grad, x0, alpha, eps)
        attacked = to_uint8(x)
        with torch.no_grad():
            stored = torch.from_numpy(np.stack(attacked)).permute(0, 3, 1, 2).to(self.device, torch.float32) / 255.0
            end_loss = self.objective(stored, context, cfg.objective)
        return attacked, start_loss.tolist(), end_loss.tolist()

    def answer(self, images: Sequence[UInt8Image], questions: Sequence[str], max_new_tokens: int) -> list[str]:
        """The policy's greedy answers (at most ``max_new_tokens``), left-padded batch, through the same path as
        ``mfpo eval generate`` (:class:`mfpo.eval.hf_runner.HFLlavaRunner`)."""
        from mfpo.eval.config import GenerationConfig
        from mfpo.eval.hf_runner import HFLlavaRunner
        from mfpo.eval.runner import GenerationRequest

        runner = HFLlavaRunner(self.model, self.processor, self.device, "policy")
        requests = [GenerationRequest(id=str(i), question=q, image=Image.fromarray(im))
                    for i, (im, q) in enumerate(zip(images, questions, strict=True))]
        return runner.generate(requests, GenerationConfig(max_new_tokens=max_new_tokens, batch_size=len(requests)))


def check_mbpo_request(request: NegativeRequest, config: MbpoConfig) -> None:
    """:func:`~mfpo.negatives.base.check_image`, a question (the model answers it), and a chosen answer for the
    ``answer`` objective."""
    check_image(request)
    if not request.question.strip():
        raise negatives_error("MBPO generates the rejected answer to the question, which is empty", request.id)
    if config.objective == "answer" and not request.chosen.strip():
        raise negatives_error("MBPO's 'answer' objective attacks the chosen answer, which is empty", request.id)


def mbpo_negatives(requests: Sequence[NegativeRequest], config: MbpoConfig, attacker: LlavaAttacker) -> list[
    NegativeResult
]:
    """MBPO's hard negative for each request (module docstring), batched by ``batch_size``.

    result.image: the attacked model view, uint8 (S, S, 3); result.response: the policy's greedy answer on it
    (the rejected response); details: objective, epsilon / step_size (levels), steps, the measured L-inf
    distance in levels, L before and after the attack, the view size, and whether the answer equals chosen.
    """
    for request in requests:
        check_mbpo_request(request, config)
    results: list[NegativeResult] = []
    for start in range(0, len(requests), config.batch_size):
        batch = requests[start : start + config.batch_size]
        views = [attacker.model_view(r.image) for r in batch]
        questions, answers = [r.question for r in batch], [r.chosen for r in batch]
        attacked, before, after = attacker.attack(views, [r.seed for r in batch], questions, answers, config)
        responses = attacker.answer(attacked, questions, config.max_new_tokens)
        for r, view, adv, b, a, text in zip(batch, views, attacked, before, after, responses, strict=True):
            linf = int(np.abs(adv.astype(np.int16) - view.astype(np.int16)).max())
            details = {"objective": config.objective, "epsilon": config.epsilon, "step_size": config.step_size,
                       "steps": config.steps, "random_start": config.random_start, "linf": linf,
                       "objective_clean": b, "objective_attacked": a, "view_size": [int(adv.shape[0]),
                                                                                    int(adv.shape[1])],
                       "response_equals_chosen": text.strip() == r.chosen.strip()}
            if text.strip():
                results.append(NegativeResult(kind="mbpo", image=adv, response=text, details=details))
            else:  # no hard negative answer: the item keeps its own rejected answer (with the attacked image)
                results.append(NegativeResult(kind="mbpo", image=adv, response=None, details=details,
                                              fallback="original_rejected: the policy's answer on the attacked "
                                                       "image is empty"))
    return results
