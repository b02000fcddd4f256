"""Hallucination evaluation: answers, benchmark scorers, the modality probe and the report (`mfpo eval`).

- generation: :mod:`mfpo.eval.runner` (the :class:`~mfpo.eval.runner.AnswerRunner` interface and the
  resumable loop), :mod:`mfpo.eval.hf_runner` (transformers LLaVA / LLaVA-NeXT + LoRA);
- scorers on answer files from any tool: :mod:`mfpo.eval.chair` (Object HalBench), :mod:`mfpo.eval.amber`,
  :mod:`mfpo.eval.pope`, :mod:`mfpo.eval.mmhal` and :mod:`mfpo.eval.llava_bench` (LLM judges,
  :mod:`mfpo.eval.judge`);
- :mod:`mfpo.eval.probe`: MFPO Fig. 1's modality probe on a generated dataset;
- :mod:`mfpo.eval.report`: everything for one model or base vs trained, as report.json / report.md / PNGs.

Submodules import their heavy dependencies (torch models, httpx, matplotlib) only when used.
"""
