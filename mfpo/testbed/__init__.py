"""A hallucination testbed that runs on a laptop (issue 16): does MFPO beat text-only DPO, and which parts matter?

- :mod:`~mfpo.testbed.world`: procedural scenes (:mod:`mfpo.synth`) with object co-occurrence priors,
  captions and yes/no / colour / count questions, exact truth; held-out scenes where the prior is broken;
- :mod:`~mfpo.testbed.model`: a small LLaVA-1.5 (CLIP vision tower + projector + Llama) sized to learn it;
- :mod:`~mfpo.testbed.data`: SFT rows and preference data through ``mfpo generate``'s embedded pipeline;
- :mod:`~mfpo.testbed.metrics`: CHAIR, POPE (random / popular / adversarial) and the modality probe,
  exact against the world's truth, with the scorers of :mod:`mfpo.eval`;
- :mod:`~mfpo.testbed.runs`: the run matrix (DPO, MFPO, mDPO, AdaViP and MFPO's ablations, MFPO Tables
  4, 5, 7, 8 and Figure 8) over seeds; :mod:`~mfpo.testbed.report`: tables with 95% intervals, plots;
- :mod:`~mfpo.testbed.cli`: ``mfpo testbed``.

Training runs through the ``trainer`` package (``trainer.sft``, ``trainer.loop.train``), imported inside
functions only, as :mod:`mfpo.eval.logps` does: ``import mfpo.testbed`` stays light.
"""
