"""Schedule: training step (or federated round) -> target keep fraction.

- :meth:`Schedule.one_shot` — prune once to ``final_keep`` at ``start``.
- :meth:`Schedule.cubic` — iterative pruning every ``every`` steps from ``start`` to
  ``end`` with the cubic ramp of Zhu & Gupta (2017, "To prune, or not to prune",
  arXiv 1710.01878): sparsity s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3,
  keep = 1 - s.
- :meth:`Schedule.decay` — prune rounds at the given steps; round i removes
  ``fraction * decay**i`` of what is left (LightGaussian's iterative schedule,
  arXiv 2311.17245).

``keep_at(step)`` is the keep fraction (relative to the starting size) in force after
the prune at ``step``; ``is_prune_step(step)`` says whether pruning happens there.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Schedule:
    kind: str
    steps: tuple[int, ...]
    keeps: tuple[float, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.keeps):
            raise ValueError("steps and keeps differ in length")
        if list(self.steps) != sorted(set(self.steps)):
            raise ValueError(f"prune steps must be strictly increasing, got {self.steps}")
        for k in self.keeps:
            if not (0.0 < k <= 1.0):
                raise ValueError(f"keep fractions must be in (0, 1], got {k}")

    @classmethod
    def one_shot(cls, step: int, final_keep: float) -> "Schedule":
        return cls("one_shot", (int(step),), (float(final_keep),))

    @classmethod
    def cubic(cls, start: int, end: int, every: int, final_keep: float, initial_keep: float = 1.0) -> "Schedule":
        if end <= start or every <= 0:
            raise ValueError(f"cubic schedule needs start < end and every > 0, got {start}, {end}, {every}")
        s_i, s_f = 1.0 - initial_keep, 1.0 - final_keep
        steps = list(range(start, end + 1, every))
        if steps[-1] != end:
            steps.append(end)
        keeps = [1.0 - (s_f + (s_i - s_f) * (1.0 - (t - start) / (end - start)) ** 3) for t in steps]
        keeps[-1] = final_keep
        return cls("cubic", tuple(steps), tuple(max(k, final_keep) for k in keeps))

    @classmethod
    def decay(cls, steps, fraction: float, decay: float = 1.0) -> "Schedule":
        if not (0.0 <= fraction < 1.0) or decay <= 0:
            raise ValueError(f"decay schedule needs 0 <= fraction < 1 and decay > 0, got {fraction}, {decay}")
        keep, keeps = 1.0, []
        for i, _ in enumerate(steps):
            keep *= 1.0 - min(fraction * decay**i, 1.0)
            keeps.append(keep)
        return cls("decay", tuple(int(s) for s in steps), tuple(keeps))

    def is_prune_step(self, step: int) -> bool:
        return step in self.steps

    def keep_at(self, step: int) -> float:
        """Keep fraction (of the size at the first prune) in force after ``step``."""
        keep = 1.0
        for s, k in zip(self.steps, self.keeps):
            if step >= s:
                keep = k
        return keep

    def step_keep(self, step: int) -> float:
        """Fraction of the *current* units to keep at ``step`` (1.0 off-schedule)."""
        if step not in self.steps:
            return 1.0
        i = self.steps.index(step)
        prev = self.keeps[i - 1] if i else 1.0
        return self.keeps[i] / prev
