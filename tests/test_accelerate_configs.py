"""The shipped accelerate configs load with accelerate's own loader and say what their names promise."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


@pytest.mark.parametrize(("name", "kind"), [("multi_gpu", "MULTI_GPU"), ("deepspeed_zero2", "DEEPSPEED"),
                                            ("deepspeed_zero3", "DEEPSPEED"), ("fsdp", "FSDP")])
def test_config_loads_and_matches_its_name(name, kind):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.distributed_type.value == kind and config.mixed_precision == "bf16" and not config.use_cpu
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
    if name == "fsdp":
        assert "LlamaDecoderLayer" in config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
