"""``python -m trainer ...`` / ``accelerate launch -m trainer ...``: the same options as ``mfpo train``."""

from trainer.cli import main

main()
