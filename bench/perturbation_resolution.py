"""How much noise the model sees, by source resolution (MFPO sec. 3.1 perturbation, issue 13).

A photo (scikit-learn's bundled ``china.jpg``, 427x640, else a synthetic scene) is scaled
to square sources of 336 / 672 / 1344 / 2048 px (and a 1344x2016 one), noised over the
whole image at ``--noise-step`` (t=500) in three ways, and passed through LLaVA-1.5's image
processor (transformers' CLIPImageProcessor: shorter side -> 336 bicubic, center crop 336,
CLIP normalisation), exactly what the model is fed. Reported per source: the Pearson
correlation of the clean and the noised model inputs (all pixels and channels), mean over
``--seeds`` seeds, for

* ``native``: one noise value per source pixel (the behaviour before issue 13);
* ``model_grid``: noise drawn at 336 and upsampled by nearest neighbour, no compensation;
* ``model_grid_compensated``: the default, also scaled for the processor's bicubic low-pass.

``ddpm_reference`` is the 336 px source's value: there the processor does not resample, so
it is DDPM's x_t = sqrt(a_t) x + sqrt(1 - a_t) eps (clamped and quantised to 8 bits) seen
directly; ``ddpm_analytic`` is sqrt(a) s / sqrt(a s^2 + 1 - a) for the clean input's pixel
std s in [-1, 1] (before clamping). Also: the seconds and peak traced memory of one
perturbation of a 36-megapixel image with a quarter-image mask. Prints ONE JSON line.

    python bench/perturbation_resolution.py [--noise-step 500] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from mfpo.perturbation import PerturbationConfig, alpha_bar, perturb_in_mask

SOURCES = ((336, 336), (672, 672), (1344, 1344), (2048, 2048), (1344, 2016))
MODES = {
    "native": {"model_resolution": None},
    "model_grid": {"model_resolution": 336, "compensate_resampling": False},
    "model_grid_compensated": {"model_resolution": 336, "compensate_resampling": True},
}


def photo() -> tuple[np.ndarray, str]:
    """A real photo if scikit-learn's sample images are installed, else a synthetic scene."""
    try:
        from sklearn.datasets import load_sample_image

        return load_sample_image("china.jpg"), "sklearn china.jpg (427x640)"
    except ImportError:
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)
        return np.asarray(Image.fromarray(base).resize((640, 427), Image.Resampling.BICUBIC)), "synthetic 427x640"


def source(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The photo center-cropped to the aspect ratio and resized (Lanczos) to height x width."""
    h, w = image.shape[:2]
    if w / h > width / height:
        cw = round(h * width / height)
        image = image[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = round(w * height / width)
        image = image[(h - ch) // 2 : (h - ch) // 2 + ch]
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def model_input(processor: object, image: np.ndarray) -> np.ndarray:
    return processor(images=image, return_tensors="np")["pixel_values"][0]  # type: ignore[operator]


def memory_check(a: float) -> dict:
    """Seconds and peak traced memory (beyond the input and output images) at 36 megapixels."""
    image = np.zeros((6000, 6000, 3), dtype=np.uint8)
    mask = np.zeros((6000, 6000), dtype=bool)
    mask[1500:4500, 1500:4500] = True
    tracemalloc.start()
    t0 = time.perf_counter()
    perturb_in_mask(image, mask, a, seed=0)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "megapixels": 36,
        "mask_fraction": 0.25,
        "seconds": round(seconds, 2),
        "peak_extra_mb": round((peak - image.nbytes) / 1e6, 1),
        "full_res_float_noise_mb": round(image.size * 4 / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise-step", type=int, default=500, help="diffusion timestep t")
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds averaged per source")
    args = parser.parse_args()
    from transformers import CLIPImageProcessor

    # LLaVA-1.5's processor (openai/clip-vit-large-patch14-336's preprocessor_config.json)
    processor = CLIPImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, resample=3, do_center_crop=True
    )
    a = alpha_bar(PerturbationConfig(noise_step=args.noise_step))
    base, base_name = photo()
    result: dict = {"bench": "perturbation_resolution", "noise_step": args.noise_step, "alpha_bar": round(a, 5),
                    "image": base_name, "model_resolution": 336, "correlation": {}}
    for height, width in SOURCES:
        image = source(base, height, width)
        clean = model_input(processor, image).ravel()
        row = {}
        for mode, options in MODES.items():
            values = []
            for seed in range(args.seeds):
                noised = perturb_in_mask(image, np.ones((height, width), bool), a, seed, **options)  # type: ignore[arg-type]
                values.append(float(np.corrcoef(clean, model_input(processor, noised).ravel())[0, 1]))
            row[mode] = round(float(np.mean(values)), 4)
        result["correlation"][f"{height}x{width}"] = row
        if (height, width) == (336, 336):
            s = float((image.astype(np.float64) / 127.5 - 1.0).std())
            result["ddpm_analytic"] = round(np.sqrt(a) * s / np.sqrt(a * s * s + 1 - a), 4)
    reference = result["correlation"]["336x336"]["model_grid_compensated"]
    result["ddpm_reference"] = reference
    result["max_abs_deviation_from_reference"] = {
        mode: round(max(abs(r[mode] - reference) for r in result["correlation"].values()), 4) for mode in MODES
    }
    result["memory"] = memory_check(a)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
