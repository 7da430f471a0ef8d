"""The adaptive-seeds rule of a study (`AdaptiveRule`): how many seeds to add per round, the
interval half-width to reach, the seed limit, and its state as stored with the study (the rounds'
history, why it stopped). Applying it a round at a time is `rounds.advance`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cnn_ablation.config import MAX_SEEDS, METRICS, ConfigError


@dataclass(frozen=True)
class AdaptiveRule:
    """Adaptive seeds: add `step` seeds per cell, a round at a time, until every effect's 95 %
    interval has a half-width below `half_width` (a fraction of accuracy: 0.01 = 1 pp) on
    `metric`, or every cell has `max_seeds` seeds. The rule stops on precision only, never on
    significance: stopping once an interval excludes zero would inflate false positives.

    Its state lives here too, stored with the study: `history` holds (seeds per cell, widest
    half-width) at the end of each finished round; `stopped` says why it stopped ("" while it
    goes on)."""

    half_width: float
    max_seeds: int
    step: int = 1
    metric: str = "final_val_accuracy"
    stopped: str = ""
    history: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        hw = self.half_width
        if isinstance(hw, bool) or not isinstance(hw, (int, float)) or not math.isfinite(hw) \
                or not 0 < hw < 1:
            shown = round(100 * hw, 9) if isinstance(hw, (int, float)) else hw
            raise ConfigError("target half-width (pp)", shown, "a number > 0 and < 100")
        object.__setattr__(self, "half_width", float(hw))
        for name, value, low in (("max seeds", self.max_seeds, 2), ("seed step", self.step, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_SEEDS:
                raise ConfigError(name, value, f"a whole number from {low} to {MAX_SEEDS}")
        if self.metric not in METRICS:
            raise ConfigError("metric", self.metric, " | ".join(METRICS))
        object.__setattr__(self, "history", tuple((int(s), float(w)) for s, w in self.history))

    @property
    def round(self) -> int:
        """The round now running (1 = the first seeds), or the last one once stopped."""
        return max(len(self.history), 1) if self.stopped else len(self.history) + 1

    def text(self) -> str:
        """The rule in one line, as the page and `study show` state it."""
        return (f"add {self.step} seed(s) per cell a round at a time until every effect's 95 % "
                f"interval is narrower than ±{100 * self.half_width:g} pp on "
                f"{METRICS[self.metric]}, or {self.max_seeds} seeds per cell")

    def to_dict(self) -> dict[str, Any]:
        return {"half_width": self.half_width, "max_seeds": self.max_seeds, "step": self.step,
                "metric": self.metric, "stopped": self.stopped,
                "history": [[s, None if math.isnan(w) else w] for s, w in self.history]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdaptiveRule:
        return cls(half_width=data["half_width"], max_seeds=data["max_seeds"],
                   step=data.get("step", 1), metric=data.get("metric", "final_val_accuracy"),
                   stopped=data.get("stopped", ""),
                   history=tuple((s, math.nan if w is None else w)
                                 for s, w in data.get("history", [])))
