"""LLM judges for MMHal-Bench and LLaVA-Bench: one chat-completion interface, two backends.

- :class:`OpenAIChatJudge`: any OpenAI-compatible ``POST {base_url}/chat/completions``
  (OpenAI, Azure-style gateways, vLLM / TGI / llama.cpp servers) over plain HTTP with httpx;
  bearer key, timeout, and retries with exponential backoff on 429, 5xx and connection errors.
- :class:`HFChatJudge`: a local Hugging Face causal LM folder; the messages go through the
  tokenizer's chat template (or are joined, for a tokenizer without one) and the reply is
  decoded greedily (temperature 0, as the benchmarks ask of GPT-4) or sampled.

Both return the reply text; parsing the rating is the benchmark's business
(:mod:`mfpo.eval.ratings`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from mfpo.eval.config import JudgeConfig

Message = dict[str, str]


class JudgeError(RuntimeError):
    """The judge gave no usable reply after its retries; the message says why."""


class Judge(Protocol):
    """Chat completion: the reply text to ``messages`` (``[{"role": ..., "content": ...}]``)."""

    name: str

    def complete(self, messages: Sequence[Message], temperature: float, max_tokens: int) -> str: ...


class OpenAIChatJudge:
    """An OpenAI-compatible chat endpoint."""

    def __init__(self, config: JudgeConfig, client: Any = None) -> None:
        import httpx

        self.config, self.name = config, config.model
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = client or httpx.Client(base_url=config.base_url.rstrip("/") + "/", headers=headers,
                                              timeout=config.timeout_s)

    def complete(self, messages: Sequence[Message], temperature: float, max_tokens: int) -> str:
        import httpx

        body = {"model": self.config.model, "messages": list(messages), "temperature": temperature,
                "max_tokens": max_tokens}
        delay, last = self.config.retry_backoff_s, "no attempt"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                response = self._client.post("chat/completions", json=body)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise JudgeError(f"judge {self.config.base_url} refused the request: HTTP {response.status_code}: "
                                 f"{response.text[:500]}")
            try:
                return str(response.json()["choices"][0]["message"]["content"] or "")
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise JudgeError(f"judge {self.config.base_url} sent no chat completion: {response.text[:500]}") \
                    from exc
        raise JudgeError(f"judge {self.config.base_url} failed after {self.config.max_retries + 1} attempts: {last}")

    def close(self) -> None:
        self._client.close()


class HFChatJudge:
    """A local causal LM as judge (tests use a tiny one built in-process)."""

    def __init__(self, model: Any, tokenizer: Any, name: str) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name

    @classmethod
    def load(cls, path: str, device: str = "auto") -> HFChatJudge:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from mfpo.devices import resolve_device, resolve_dtype

        dev = resolve_device(device)
        local = Path(path).exists()
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        model: Any = AutoModelForCausalLM.from_pretrained(path, local_files_only=local,
                                                          dtype=resolve_dtype("auto", dev))
        model.to(dev).eval()
        return cls(model, tokenizer, Path(path).name if local else path)

    def prompt_ids(self, messages: Sequence[Message]) -> Any:
        """Input ids of ``messages``: the chat template with the assistant turn opened, or the joined contents."""
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                                     return_tensors="pt", return_dict=True)["input_ids"]
        else:
            text = "\n\n".join(m["content"] for m in messages)
            ids = self.tokenizer(text, return_tensors="pt")["input_ids"]
        return ids.to(self.model.device)

    def complete(self, messages: Sequence[Message], temperature: float, max_tokens: int) -> str:
        import torch

        ids = self.prompt_ids(messages)
        options: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": temperature > 0}
        if temperature > 0:
            options["temperature"] = temperature
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=pad, **options)
        return str(self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)).strip()


def build_judge(config: JudgeConfig) -> Judge:
    """The judge ``config`` describes."""
    if config.kind == "hf":
        return HFChatJudge.load(config.model, config.device)
    return OpenAIChatJudge(config)
