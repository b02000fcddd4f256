"""Confusion counts and the metrics POPE and AMBER's discriminative task report (percentages)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Confusion:
    """Counts for one positive class: true/false positives and negatives."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def add(self, predicted_positive: bool, actually_positive: bool) -> None:
        if predicted_positive and actually_positive:
            self.tp += 1
        elif predicted_positive:
            self.fp += 1
        elif actually_positive:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def metrics(self) -> dict[str, float | int]:
        """accuracy, precision, recall, f1 and the share of positive predictions, in percent (0 when undefined,
        where the reference scripts divide by zero), and n."""
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        n = self.total
        return {
            "accuracy": 100.0 * (self.tp + self.tn) / n if n else 0.0,
            "precision": 100.0 * precision,
            "recall": 100.0 * recall,
            "f1": 100.0 * f1,
            "positive_ratio": 100.0 * (self.tp + self.fp) / n if n else 0.0,
            "n": n,
        }
