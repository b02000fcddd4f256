#!/usr/bin/env bash
# The GPU measurement suite: ONE prepared script for a session that is lent a GPU (H100 or H200).
#
# Device time is 15 minutes per task, all tries and the machine's start (1-2 min) included, so this runs
# ONCE and finishes in under 8 minutes: the steps share SUITE_BUDGET_S (default 450 s, after the ~10 s
# setup) and each has its own `timeout` (regions 170 s, gpu_stage 100, trainer 110, negatives 45, testbed
# 40, each cut to what is left of the budget); a step that fails or times out does not stop the others.
# Each step appends ONE JSON line to $OUT/gpu-suite.jsonl -- {"step", "device" (torch.cuda.get_device_name),
# "rc", "seconds", "timeout_s", "timed_out", "result": <the bench's own JSON line>} plus "error": <the
# log's last lines> when it failed, or {"step", "device", "skipped": <why>} -- after a first {"step": "env"}
# line (device, dense bf16 peak, GPU memory, package versions), and writes its log to $OUT/<step>.log.
# $OUT is set by the device tool (default ./gpu-out, git-ignored through .git/info/exclude). At most 8
# files come back from $OUT: this writes 7 (gpu-suite.jsonl, setup.log, one log per step).
#
# Steps (random weights of the real architectures: the device has no model weights and no internet):
#   regions    bench/regions.py: vit_h SAM + GroundingDINO-tiny, 32 images of 1024 px, naive fp32 baseline,
#              then bf16 with the batch sweep 1,2,4,8,16,32; SAM encoder TFLOP/s vs the device's dense bf16
#              peak (bench/device_peak.py: H100 SXM and H200 989, H100 PCIe 756)
#   gpu_stage  bench/gpu_stage.py: the stage graph (mfpo.stages.GRAPH) chunk by chunk as the embedded runner
#              runs it, regions mode "grounded" with vit_h + GroundingDINO-tiny on cuda, 256 scenes of 512 px,
#              chunks of 16: items/s per stage ("path": "embedded stage graph": no Redis on the device; the
#              Celery gpu worker runs the same run_stage on the same "regions" stage)
#   trainer    bench/trainer.py --shape llava-1.5-7b: LLaVA-1.5-7B-shaped model (7.06 B parameters) made in
#              bf16 on the GPU, LoRA as the trainer adds it, 8 timed steps per loss (dpo, mfpo, mdpo, adavip),
#              2 items per step: step time, tokens/s, MFU (torch.utils.flop_counter FLOPs / peak), peak memory
#   negatives  bench/negatives.py --device cuda with its tiny models (CLIP, SD inpainting, LLaVA), 16 x 512 px
#   testbed    bench/testbed.py with --device cuda (and --smoke/--tiny/--quick if its --help has one), or
#              TESTBED_ARGS; a "skipped" line when the file is absent
#
# 1. Here, where pip works:   bash bench/gpu_wheels.sh
#    (fills .whl/ with what the device lacks: pydantic, segment-anything, diffusers, textblob, nltk,
#    lemminflect, ... and a random-weight stand-in for the 80 MiB MiniLM package: 12.1 MiB in all, beside
#    the 2.5 MiB of the repository, against the 64 MiB a call may carry)
# 2. The ONE device call (the `run` tool; kind left out: an H100, or an H200 when none is free):
#
#      run(command="bash bench/gpu_suite.sh", carry=[".whl"], timeout_s=540)
#
#    Only if a step failed and enough device time is left (status: budget_left_s), rerun just that step on
#    the still-warm machine, e.g. run(command="STEPS=trainer bash bench/gpu_suite.sh", carry=[".whl"],
#    timeout_s=150); otherwise call give_back at once.
# 3. Here: copy <files_at>/gpu-suite.jsonl to bench/results/gpu-<device>.jsonl (the env line's device,
#    lower-cased, spaces as '-': bench/results/gpu-nvidia-h100-80gb-hbm3.jsonl), and put the measured
#    figures into README.md's "GPU measurements" paragraph (which card gave each number).
#
# CPU check of this script (tiny models, small n, device cpu; the 7B shape only built on the meta device,
# its parameters counted), about 2.5 minutes on 2 cores:
#     SMOKE=1 bash bench/gpu_suite.sh        (or: bash bench/gpu_suite.sh --smoke)
# With a Python that has only the device's packages, PYTHON=... WHL_DIR=<wheels for it> SMOKE_WHEELS=1 also
# checks that the carried wheels are all that is missing.
set -u
cd "$(dirname "$0")/.."
REPO=$PWD

SMOKE=${SMOKE:-0}
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    *) echo "usage: bash bench/gpu_suite.sh [--smoke]" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
JSONL=$OUT/gpu-suite.jsonl
: >"$JSONL"
if [ "$SMOKE" = 1 ] && [ -x "$REPO/.venv/bin/python" ]; then PY=${PYTHON:-$REPO/.venv/bin/python}; else PY=${PYTHON:-python3}; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export MPLBACKEND=Agg TQDM_DISABLE=1
SUITE_BUDGET_S=${SUITE_BUDGET_S:-$([ "$SMOKE" = 1 ] && echo 900 || echo 450)}
STEPS=${STEPS:-regions gpu_stage trainer negatives testbed}  # a rerun of some: STEPS=trainer,negatives

# --- setup: the carried wheels (the device lacks segment-anything, diffusers, pydantic, ...) ----------------
# WHL_DIR (default .whl) holds them; a smoke run installs them only with SMOKE_WHEELS=1 (its venv has them all).
WHL_DIR=${WHL_DIR:-.whl}
{
  echo "== setup $(date -u +%FT%TZ) smoke=$SMOKE python=$PY"
  if { [ "$SMOKE" != 1 ] || [ "${SMOKE_WHEELS:-0}" = 1 ]; } && compgen -G "$WHL_DIR/*.whl" >/dev/null; then
    SITE=${SITE:-/tmp/site}
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL_DIR"/*.whl \
      && echo "wheels installed: $(ls "$WHL_DIR"/*.whl | wc -l) into $SITE" || echo "WHEEL INSTALL FAILED"
    export PYTHONPATH=$SITE:$REPO
  else
    echo "no wheels installed (smoke run, or no $WHL_DIR/)"
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
} >"$OUT/setup.log" 2>&1
export PYTHONPATH

SUITE_START=$(date +%s)
# The env line (device, peak, versions) goes to the JSONL; "DEVICE<TAB>PEAK" to stdout.
ENV_OUT=$("$PY" - "$SMOKE" "$JSONL" 2>>"$OUT/setup.log" <<'EOF'
import json, platform, sys
import torch
smoke, jsonl = sys.argv[1] == "1", sys.argv[2]
cuda = torch.cuda.is_available() and not smoke
name = torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()})"
sys.path.insert(0, "bench")
from device_peak import peak_tflops
line = {"step": "env", "device": name, "smoke": smoke, "cuda": cuda, "peak_tflops": peak_tflops(name) if cuda else 0.0}
versions = {"python": platform.python_version(), "torch": torch.__version__}
from importlib.metadata import version
for mod, dist in (("transformers", "transformers"), ("peft", "peft"), ("accelerate", "accelerate"),
                  ("diffusers", "diffusers"), ("segment_anything", "segment-anything"), ("pydantic", "pydantic")):
    try:
        __import__(mod)
        versions[mod] = version(dist)
    except Exception as exc:  # noqa: BLE001
        versions[mod] = f"missing ({type(exc).__name__}: {exc})"
line["versions"] = versions
if cuda:
    p = torch.cuda.get_device_properties(0)
    line["gpu"] = {"memory_gib": round(p.total_memory / 2**30, 1), "sms": p.multi_processor_count,
                   "capability": f"{p.major}.{p.minor}"}
with open(jsonl, "a") as f:
    f.write(json.dumps(line) + "\n")
print(f"{name}\t{line['peak_tflops']:g}")
EOF
)
ENV_OUT=${ENV_OUT##*$'\n'}  # its last line: an import may have printed before it
if [ -n "$ENV_OUT" ]; then
  IFS=$'\t' read -r DEVICE PEAK <<<"$ENV_OUT"
else
  DEVICE="unknown (torch failed to import; see setup.log)"; PEAK=0
  echo "{\"step\": \"env\", \"device\": \"$DEVICE\"}" >>"$JSONL"
fi
export DEVICE

# record STEP RC NANOSECONDS LIMIT_S: the step's JSON line from its log's last JSON object line.
record() {
  "$PY" - "$1" "$2" "$3" "$4" "$OUT/$1.log" >>"$JSONL" <<'EOF'
import json, os, sys
step, rc, ns, limit, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
line = {"step": step, "device": os.environ.get("DEVICE", "?"), "rc": rc, "seconds": round(ns / 1e9, 1),
        "timeout_s": limit, "timed_out": rc in (124, 137)}
text = open(log, errors="replace").read() if os.path.exists(log) else ""
result = None
for candidate in reversed(text.splitlines()):
    candidate = candidate.strip()
    if candidate.startswith("{"):
        try:
            result = json.loads(candidate)
            break
        except ValueError:
            continue
if result is not None:
    line["result"] = result
if rc != 0 or result is None:
    line["error"] = text.strip().splitlines()[-25:]
print(json.dumps(line))
EOF
}

skip() {  # skip STEP REASON
  "$PY" -c 'import json,os,sys; print(json.dumps({"step": sys.argv[1], "device": os.environ.get("DEVICE","?"), "skipped": sys.argv[2]}))' \
    "$1" "$2" >>"$JSONL"
}

# step NAME LIMIT_S CMD...: run with a timeout (capped by what is left of SUITE_BUDGET_S), log, record.
step() {
  local name=$1 limit=$2 left
  shift 2
  case " ${STEPS//,/ } " in *" $name "*) ;; *) return ;; esac
  left=$(( SUITE_BUDGET_S - ($(date +%s) - SUITE_START) ))
  if [ "$left" -lt 20 ]; then skip "$name" "suite budget spent (${SUITE_BUDGET_S}s)"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s): $*" >"$OUT/$name.log"
  local t0 rc
  t0=$(date +%s%N)
  timeout --kill-after=10 "$limit" "$@" >>"$OUT/$name.log" 2>&1
  rc=$?
  record "$name" "$rc" "$(( $(date +%s%N) - t0 ))" "$limit"
  echo "$name: rc=$rc" >&2
}

if [ "$SMOKE" = 1 ]; then
  DEV=cpu
  step regions 240 "$PY" bench/regions.py --n 2 --size 128 --sam-type vit_tiny --grounding tiny \
    --batch-sizes 1,2 --device cpu --peak-tflops 1
  step gpu_stage 180 "$PY" bench/gpu_stage.py --n 4 --size 96 --device cpu --sam-type vit_tiny --grounding tiny \
    --batch-size 2
  step trainer 120 "$PY" bench/trainer.py --shape llava-1.5-7b --device meta
  step negatives 300 "$PY" bench/negatives.py --n 2 --size 64 --device cpu --steps 1 --max-new-tokens 4 \
    --inpaint-steps 2 --batch-size 2
else
  DEV=cuda
  step regions 170 "$PY" bench/regions.py --n 32 --size 1024 --sam-type vit_h --grounding grounding-dino-tiny \
    --batch-sizes 1,2,4,8,16,32 --device cuda --peak-tflops "$PEAK"
  step gpu_stage 100 "$PY" bench/gpu_stage.py --n 256 --size 512 --device cuda --sam-type vit_h \
    --grounding grounding-dino-tiny --batch-size 16
  step trainer 110 "$PY" bench/trainer.py --shape llava-1.5-7b --device cuda --steps 8 --batch-size 2 \
    --peak-tflops "$PEAK"
  step negatives 45 "$PY" bench/negatives.py --n 16 --size 512 --device cuda --steps 10 --max-new-tokens 32 \
    --inpaint-steps 25 --batch-size 8
fi

# testbed: written by another part of the project; run its smallest configuration on the device when present.
if [[ " ${STEPS//,/ } " != *" testbed "* ]]; then
  :
elif [ ! -f bench/testbed.py ]; then
  skip testbed "bench/testbed.py is absent"
else
  HELP=$("$PY" bench/testbed.py --help 2>&1 || true)
  if [ -n "${TESTBED_ARGS:-}" ]; then
    # shellcheck disable=SC2086
    step testbed 40 "$PY" bench/testbed.py $TESTBED_ARGS
  else
    ARGS=()
    grep -q -- "--device" <<<"$HELP" && ARGS+=(--device "$DEV")
    for flag in --smoke --tiny --quick; do grep -q -- "$flag\b" <<<"$HELP" && { ARGS+=("$flag"); break; }; done
    step testbed 40 "$PY" bench/testbed.py "${ARGS[@]}"
  fi
fi

echo "suite done in $(( $(date +%s) - SUITE_START ))s; results: $JSONL" >&2
cat "$JSONL"
