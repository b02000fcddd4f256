"""Benchmark of the hallucination testbed (issue 16): wall time of the full run or ``--quick``, and what it found.

Runs ``mfpo testbed`` (:func:`mfpo.testbed.experiment.run_testbed`) with the committed configuration
(``configs/testbed.json`` unless ``--config``) into ``--out`` and prints ONE JSON line: the wall time against
the issue's budget (full <= 90 min, ``--quick`` <= 10 min on a 2-core machine), the time of each step, the
base model (caption recall, CHAIR_i, prior hallucination), MFPO minus DPO (paired by seed) and the main
table's means. The budget is measured, not asserted. A finished ``--out`` is reused (resume), so time a run
into a fresh folder.

    python bench/testbed.py --quick --out /tmp/testbed-quick
    python bench/testbed.py --out /tmp/testbed-full
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mfpo.testbed.config import TestbedConfig
from mfpo.testbed.experiment import run_testbed

BUDGET_S = {"quick": 600, "full": 5400}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="DPO vs MFPO, one seed.")
    parser.add_argument("--out", type=Path, required=True, help="Output folder (use a fresh one to time a run).")
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "testbed.json")
    args = parser.parse_args()
    config = TestbedConfig.model_validate_json(args.config.read_text())
    fresh = not (args.out / "report.json").is_file()
    started = time.perf_counter()
    report = run_testbed(config, args.out, quick=args.quick)
    seconds = time.perf_counter() - started
    mode = "quick" if args.quick else "full"
    main_table = next((t for t in report["tables"] if t["name"] == "main"), None)
    means = {r["run"]: {k: round(v["mean"], 2) for k, v in r.items() if isinstance(v, dict)}
             for r in (main_table["rows"] if main_table else [])}
    print(json.dumps({
        "bench": "testbed", "mode": mode, "fresh": fresh, "seconds": round(seconds, 1), "budget_s": BUDGET_S[mode],
        "within_budget": seconds <= BUDGET_S[mode], "cpus": os.cpu_count(), "machine": platform.machine(),
        "config": str(args.config), "seeds": report["seeds"], "runs": report["runs"], "timings_s": report["timings_s"],
        "base": {k: [round(x, 2) for x in report["base"][k]] for k in ("recall", "chair_i", "prior_hallucination")},
        "mfpo_vs_dpo": {k: {"mean": round(v["mean"], 3), "ci95": round(v["ci95"], 3), "verdict": v["verdict"]}
                        for k, v in report["mfpo_vs_dpo"].items()},
        "main_table": means,
    }))


if __name__ == "__main__":
    main()
