"""The adaptive-seeds rule of a study (`AdaptiveRule`, Stein's two-stage rule): the interval
half-width to reach, the seed limit, the seeds added per round, the plan made from the first
round's spread, and its state as stored with the study (the rounds' history, why it stopped).
Applying it a round at a time is `rounds.advance`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cnn_ablation.config import MAX_SEEDS, METRICS, ConfigError


@dataclass(frozen=True)
class AdaptiveRule:
    """Adaptive seeds by Stein's two-stage rule: the first round's seeds (at least 2, better 3+)
    give each difference's seed-to-seed spread s; from that alone the rule plans the seeds per
    cell that bring every difference's 95 % interval (main effects, interactions, each cell vs
    the base) under ±`half_width` (a fraction of accuracy: 0.01 = 1 pp):
    n = max(first, ⌈(t(first - 1) · s / half_width)²⌉), at most `max_seeds`. Later rounds add up
    to `step` seeds per cell until the plan is met; the plan is never revised. The intervals
    then use the first round's spread with its degrees of freedom
    (`estimators.paired_difference`), which keeps their 95 % exact: stopping whenever the
    observed spread happened to be small, the old rule, covered the true effect in 92 %.
    It stops on precision only, never on significance.

    Its state lives here too, stored with the study: `history` holds (seeds per cell, widest
    half-width) at the end of each finished round; `planned` the seeds per cell the first
    round's spread asks for (0 until it is known); `stopped` says why it stopped ("" while it
    goes on)."""

    half_width: float
    max_seeds: int
    step: int = 1
    metric: str = "final_val_accuracy"
    stopped: str = ""
    history: tuple[tuple[int, float], ...] = ()
    planned: int = 0
    first: int = 0  # seeds per cell of the round the plan was made from (0: no plan yet)

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

    def first_seeds(self, seeds: int) -> int:
        """Seeds per cell of the round the plan was made from: the intervals use that round's
        spread (Stein). While the first round runs, `seeds`. A study from before this rule
        (history, no plan): 0, the ordinary intervals, until its next round is decided."""
        if self.first:
            return self.first
        return 0 if self.history else seeds

    def plan(self, seeds: int, rows: list[tuple[float, int]]) -> int:
        """Stein's plan: the seeds per cell that bring every difference's interval under
        ±half_width, from each one's spread `sd` over its `n` pairs this round:
        max(seeds, ⌈(t(n - 1) · sd / half_width)²⌉), at most `max_seeds`. A spread of zero
        needs no more seeds; an unknown one (NaN, fewer than 2 pairs) all of them."""
        from scipy import stats  # type: ignore[import-untyped]

        need = seeds
        for sd, n in rows:
            if not math.isfinite(sd) or n < 2:
                return self.max_seeds
            quantile = float(stats.t.ppf(0.975, n - 1))
            need = max(need, math.ceil((quantile * sd / self.half_width) ** 2 - 1e-9))
        return min(need, self.max_seeds)

    @property
    def round(self) -> int:
        """The round now running (1 = the first seeds), or the last one once stopped."""
        return max(len(self.history), 1) if self.stopped else len(self.history) + 1

    def text(self) -> str:
        """The rule in one line, as the page and `study show` state it."""
        return (f"the first round's spread plans the seeds per cell that bring every "
                f"difference's 95 % interval (effects, interactions, each cell vs the base) "
                f"under ±{100 * self.half_width:g} pp on {METRICS[self.metric]} (Stein's "
                f"two-stage rule), at most {self.max_seeds}; up to {self.step} seed(s) added "
                "per round")

    def to_dict(self) -> dict[str, Any]:
        return {"half_width": self.half_width, "max_seeds": self.max_seeds, "step": self.step,
                "metric": self.metric, "stopped": self.stopped,
                "history": [[s, None if math.isnan(w) else w] for s, w in self.history],
                "planned": self.planned, "first": self.first}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdaptiveRule:
        return cls(half_width=data["half_width"], max_seeds=data["max_seeds"],
                   step=data.get("step", 1), metric=data.get("metric", "final_val_accuracy"),
                   stopped=data.get("stopped", ""),
                   history=tuple((s, math.nan if w is None else w)
                                 for s, w in data.get("history", [])),
                   planned=data.get("planned", 0), first=data.get("first", 0))
