"""Budget: how much to keep.

Exactly one of ``keep_ratio``, ``keep_count``, ``threshold`` or ``cost`` is set.

- ``keep_ratio``  r in (0, 1]: keep floor(r * N) units (at least one per scope when N > 0).
- ``keep_count``  n >= 0: keep n units.
- ``threshold``   t: keep units whose score is >= t.
- ``cost``        c >= 0: keep the highest-scoring units whose cumulative cost stays <= c
  (units are taken in score order; the first one that would overflow ends the walk).

``scope="global"`` ranks all groups together; ``scope="per_group"`` applies the budget to
each group separately (a count is then per group; a cost budget is split in proportion
to each group's total cost). ``floor`` keeps at least that many top units in every
group, whatever the budget says (floors are reserved first and counted in the budget).
``low_fraction`` takes that fraction of a ratio/count budget from the *lowest* scores
instead of the highest (SUNDAE's two-band keep rule, arXiv 2405.00676, uses 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Scope = Literal["global", "per_group"]


@dataclass(frozen=True)
class Budget:
    keep_ratio: float | None = None
    keep_count: int | None = None
    threshold: float | None = None
    cost: float | None = None
    scope: Scope = "global"
    floor: int = 0
    low_fraction: float = 0.0

    def __post_init__(self) -> None:
        given = [n for n in ("keep_ratio", "keep_count", "threshold", "cost") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"a Budget needs exactly one of keep_ratio, keep_count, threshold, cost; got {given or 'none'}")
        if self.keep_ratio is not None and not (0.0 < self.keep_ratio <= 1.0) :
            raise ValueError(f"keep ratio must be in (0, 1], got {self.keep_ratio}")
        if self.keep_count is not None and (int(self.keep_count) != self.keep_count or self.keep_count < 0):
            raise ValueError(f"keep count must be a non-negative integer, got {self.keep_count}")
        if self.threshold is not None and math.isnan(self.threshold):
            raise ValueError("threshold must be a number, got NaN")
        if self.cost is not None and not (self.cost >= 0 and math.isfinite(self.cost)):
            raise ValueError(f"cost budget must be finite and >= 0, got {self.cost}")
        if self.scope not in ("global", "per_group"):
            raise ValueError(f"scope must be 'global' or 'per_group', got {self.scope!r}")
        if self.floor < 0:
            raise ValueError(f"floor must be >= 0, got {self.floor}")
        if not (0.0 <= self.low_fraction <= 1.0):
            raise ValueError(f"low_fraction must be in [0, 1], got {self.low_fraction}")
        if self.low_fraction and (self.threshold is not None or self.cost is not None):
            raise ValueError("low_fraction applies to keep_ratio and keep_count budgets only")

    @property
    def kind(self) -> str:
        for n in ("keep_ratio", "keep_count", "threshold", "cost"):
            if getattr(self, n) is not None:
                return n
        raise AssertionError("unreachable")

    def describe(self) -> str:
        v = getattr(self, self.kind)
        s = f"{self.kind}={v:g}" if isinstance(v, float) else f"{self.kind}={v}"
        if self.scope != "global":
            s += f" ({self.scope})"
        if self.floor:
            s += f" floor={self.floor}"
        if self.low_fraction:
            s += f" low_fraction={self.low_fraction:g}"
        return s

    def count_for(self, n: int) -> int:
        """Units kept out of ``n`` by a ratio or count budget."""
        if self.keep_ratio is not None:
            if n == 0:
                return 0
            return max(1, min(n, math.floor(self.keep_ratio * n + 1e-9)))
        if self.keep_count is not None:
            return min(n, int(self.keep_count))
        raise ValueError(f"{self.kind} budget has no fixed count")
