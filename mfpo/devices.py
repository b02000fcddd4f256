"""Device and dtype settings shared by the model-based stages.

``device="auto"`` picks ``cuda`` when a GPU is visible, else ``cpu``; ``dtype="auto"``
picks bfloat16 autocast on CUDA and float32 on CPU (design: bf16 on GPU by default).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch is imported where a model runs, not by the configs that name these types
    import torch

DeviceName = str
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]


def resolve_device(device: DeviceName) -> torch.device:
    """``auto`` -> cuda if available else cpu; anything else is passed to ``torch.device``.

    Asking for ``cuda`` without a GPU is an error at start-up, not at the first item.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but no CUDA GPU is visible to torch")
    return dev


def resolve_dtype(dtype: DtypeName, device: torch.device) -> torch.dtype:
    """Compute dtype: ``auto`` -> bfloat16 on CUDA, float32 elsewhere."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """``torch.autocast`` to ``dtype`` unless it is float32 (then a no-op)."""
    import torch

    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
