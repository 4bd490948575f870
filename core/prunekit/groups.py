"""The name -> 1-D tensor container protocol shared by :class:`~prunekit.mask.Mask` and
:class:`~prunekit.scores.Scores`: ``x[name]``, ``iter(x)`` (group names, insertion order), ``len(x)``."""

from __future__ import annotations

from typing import Iterator

import torch


class NamedGroups:
    """Mapping-style read access to ``self.groups`` (a ``dict[str, torch.Tensor]``)."""

    groups: dict[str, torch.Tensor]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.groups[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)
