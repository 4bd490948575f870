"""Scoring context for splat scenes: the views, and render statistics computed once on demand."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .cameras import Camera
from .scene import GaussianScene


class LazyViews(Sequence):
    """A camera list made on first use (view synthesis costs a robust-bounds pass over the
    scene, wasted on view-free scorers such as ``sundae`` and ``opacity``)."""

    def __init__(self, make: Callable[[], list[Camera]]):
        self._make, self._views = make, None

    def resolve(self) -> list[Camera]:
        if self._views is None:
            self._views = list(self._make())
        return self._views

    def __getitem__(self, i):
        return self.resolve()[i]

    def __len__(self) -> int:
        return len(self.resolve())


@dataclass
class SplatContext:
    scene: GaussianScene
    cameras: list[Camera]
    progress: bool = False
    _stats: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    def stats(self) -> dict[str, torch.Tensor]:
        """Per-Gaussian render statistics over all context views (max_weight, sum_weight,
        sum_opacity_t, hits), computed on first use."""
        if self._stats is None:
            from .render import accumulate_stats

            self._stats = accumulate_stats(self.scene, self.cameras, progress=self.progress)
        return self._stats
