"""MFPO: modality-fair preference data and training for multimodal LLMs.

The core library. Pure algorithms and contracts; no web, queue or trainer code.
See ``README.md`` for the stages and the paper equations each module implements.
"""

__version__ = "0.1.0"
