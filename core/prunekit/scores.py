"""Scores: named groups of 1-D float tensors, one value per prunable unit.

Higher means more important. A group may carry a per-unit cost (bytes, parameters,
MACs) so that a :class:`~prunekit.budget.Budget` can be spent in cost, not only in
counts. Scores are produced by scorers (pure functions of a target) and turned into a
:class:`~prunekit.mask.Mask` by :func:`~prunekit.select` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

from .groups import NamedGroups

DEFAULT_GROUP = "units"


def _as_1d_float(name: str, value) -> torch.Tensor:
    t = torch.as_tensor(value)
    if t.dim() != 1:
        raise ValueError(f"scores group {name!r}: expected a 1-D tensor, got shape {tuple(t.shape)}")
    if not torch.is_floating_point(t):
        t = t.to(torch.float32)
    return t.detach()


@dataclass
class Scores(NamedGroups):
    """Named groups of per-unit importance scores, with optional per-unit costs.

    ``groups[name][i]`` is the importance of unit ``i`` of group ``name``;
    ``cost[name][i]`` (if given) what keeping it costs. Group order is insertion order
    and is the tie-break order of :func:`~prunekit.select`.
    """

    groups: dict[str, torch.Tensor]
    cost: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.groups = {k: _as_1d_float(k, v) for k, v in self.groups.items()}
        cost = {}
        for k, v in self.cost.items():
            if k not in self.groups:
                raise ValueError(f"cost given for unknown scores group {k!r}")
            c = _as_1d_float(k, v)
            if c.shape != self.groups[k].shape:
                raise ValueError(
                    f"cost of group {k!r} has {c.numel()} entries, scores have {self.groups[k].numel()}"
                )
            if bool((c < 0).any()):
                raise ValueError(f"cost of group {k!r} has negative entries")
            cost[k] = c
        self.cost = cost

    @classmethod
    def single(cls, values, cost=None, name: str = DEFAULT_GROUP) -> "Scores":
        """One group called ``name`` (default ``"units"``)."""
        return cls({name: values}, {name: cost} if cost is not None else {})

    @property
    def sizes(self) -> dict[str, int]:
        return {k: v.numel() for k, v in self.groups.items()}

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    def unit_cost(self, name: str) -> torch.Tensor:
        """Per-unit cost of group ``name`` (ones when none was given)."""
        if name in self.cost:
            return self.cost[name]
        return torch.ones(self.groups[name].numel(), dtype=torch.float64)

    def map(self, fn) -> "Scores":
        """Apply ``fn`` to every group's tensor (costs unchanged)."""
        return Scores({k: fn(v) for k, v in self.groups.items()}, dict(self.cost))

    @classmethod
    def from_mapping(cls, m: Mapping[str, torch.Tensor]) -> "Scores":
        return cls(dict(m))
