"""Dense bf16 peak TFLOP/s of the device, from its name: prints one number (0 when not known).

The denominators of the benchmarks' utilisation figures (``--peak-tflops`` of ``bench/regions.py`` and
``bench/trainer.py``): vendor datasheet dense (not 2:4 sparse) bf16 tensor-core figures.

    python bench/device_peak.py            # torch.cuda.get_device_name(0), or 0 without CUDA
    python bench/device_peak.py --name "NVIDIA H100 PCIe"
"""

from __future__ import annotations

import argparse

PEAKS: tuple[tuple[str, float], ...] = (
    # (substring of the lower-cased device name, dense bf16 TFLOP/s); first match wins, so the specific
    # variants come before the family name.
    ("gh200", 989.0),
    ("h200", 989.0),
    ("h100 pcie", 756.0),
    ("h100 nvl", 835.0),
    ("h100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("h800 pcie", 756.0),
    ("h800", 989.0),
    ("b200", 2250.0),
    ("a100", 312.0),
    ("l40s", 362.0),
    ("a10g", 70.0),
)


def peak_tflops(name: str) -> float:
    """Dense bf16 TFLOP/s of the device called ``name`` (``torch.cuda.get_device_name``), 0.0 when unknown."""
    lowered = name.lower()
    return next((peak for key, peak in PEAKS if key in lowered), 0.0)


def device_name() -> str:
    """``torch.cuda.get_device_name(0)``, or ``cpu`` without CUDA."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=None, help="device name (default: this machine's first CUDA device)")
    args = parser.parse_args()
    peak = peak_tflops(args.name if args.name is not None else device_name())
    print(f"{peak:g}")


if __name__ == "__main__":
    main()
