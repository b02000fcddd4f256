"""The report table: one row per run, columns as in MFPO's Table 1 (plus POPE, LLaVA-Bench and the probe).

Each column names its benchmark, metric and better direction (↑ / ↓); only the columns of
benchmarks that were run appear. Rates are percentages, the MMHal-Bench score is 0-6.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    label: str
    source: str
    higher_is_better: bool | None
    get: Callable[[Mapping[str, Any]], float]


COLUMNS = (
    Column("MMHal Score", "mmhal", True, lambda s: s["score"]),
    Column("MMHal HalRate", "mmhal", False, lambda s: s["hal_rate"]),
    Column("ObjHal CHAIR_s", "object_halbench", False, lambda s: s["chair_s"]),
    Column("ObjHal CHAIR_i", "object_halbench", False, lambda s: s["chair_i"]),
    Column("ObjHal Recall", "object_halbench", True, lambda s: s["recall"]),
    Column("ObjHal Len", "object_halbench", None, lambda s: s["length"]),
    Column("AMBER CHAIR", "amber.generative", False, lambda s: s["chair"]),
    Column("AMBER Cover", "amber.generative", True, lambda s: s["cover"]),
    Column("AMBER Hal", "amber.generative", False, lambda s: s["hal"]),
    Column("AMBER Cog", "amber.generative", False, lambda s: s["cog"]),
    Column("AMBER Acc", "amber.discriminative", True, lambda s: s["overall"]["accuracy"]),
    Column("AMBER F1", "amber.discriminative", True, lambda s: s["overall"]["f1"]),
    Column("POPE Acc", "pope", True, lambda s: s["mean"]["accuracy"]),
    Column("POPE F1", "pope", True, lambda s: s["mean"]["f1"]),
    Column("POPE Yes", "pope", None, lambda s: s["mean"]["yes_ratio"]),
    Column("LLaVA-Bench", "llava_bench", True, lambda s: s["relative"]),
    Column("Probe y_w (m)", "probe", True, lambda s: s["prefers_chosen"]),
    Column("Probe y_w (noise)", "probe", None, lambda s: s["prefers_chosen_noise"]),
    Column("Probe gap", "probe", True, lambda s: s["noise_gap"]),
    Column("Probe m over m'", "probe", True, lambda s: s["prefers_original_image"]),
)


def _source(results: Mapping[str, Any], source: str) -> Mapping[str, Any] | None:
    value: Any = results
    for part in source.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, Mapping) else None


def table_rows(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Run name -> column label -> value, for every column some run has."""
    rows: dict[str, dict[str, float]] = {}
    for name, results in runs.items():
        row: dict[str, float] = {}
        for column in COLUMNS:
            found = _source(results, column.source)
            if found is not None:
                row[column.label] = float(column.get(found))
        rows[name] = row
    return rows


def _arrow(label: str) -> str:
    column = next(c for c in COLUMNS if c.label == label)
    return {True: " ↑", False: " ↓", None: ""}[column.higher_is_better]


def markdown_table(rows: Mapping[str, Mapping[str, float]], delta: tuple[str, str] | None = None) -> str:
    """A Markdown table of :func:`table_rows`; with ``delta`` = (base, trained), a last row trained - base."""
    labels = list(dict.fromkeys(label for row in rows.values() for label in row))
    lines = ["| Model | " + " | ".join(label + _arrow(label) for label in labels) + " |",
             "|---|" + "---:|" * len(labels)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[label]:.2f}" if label in row else "—"
                                                  for label in labels) + " |")
    if delta:
        base, trained = rows[delta[0]], rows[delta[1]]
        cells = [f"{trained[label] - base[label]:+.2f}" if label in base and label in trained else "—"
                 for label in labels]
        lines.append(f"| Δ ({delta[1]} − {delta[0]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
