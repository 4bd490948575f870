"""GaussianScene: the per-Gaussian tensors of a 3D Gaussian Splatting scene.

Conventions (those of gsplat and of the INRIA PLY, pre-activation):

- ``means``     [N, 3] float32 world positions
- ``quats``     [N, 4] float32 rotation quaternions, **w first**, as stored (not normalised)
- ``scales``    [N, 3] float32 **log** scales (activated scale = exp)
- ``opacities`` [N]    float32 opacity **logits** (activated opacity = sigmoid)
- ``sh0``       [N, 3] float32 SH DC coefficients (``f_dc``); RGB = 0.5 + C0 * sh0
- ``shN``       [N, K, 3] float32 higher SH coefficients, coefficient-major with colour
  innermost (gsplat/nerfstudio order; INRIA PLY stores them channel-major), K in 0, 3, 8, 15
- ``extra``     name -> [N, ...] tensors carried through untouched (normals, custom
  properties), sliced with the Gaussians
- ``meta``      file-level facts for faithful re-writing (format, property order, comments)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

SH_C0 = 0.28209479177387814
SH_COEFFS_TO_DEGREE = {0: 0, 3: 1, 8: 2, 15: 3}


@dataclass
class GaussianScene:
    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    sh0: torch.Tensor
    shN: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    PER_GAUSSIAN = ("means", "quats", "scales", "opacities", "sh0", "shN")

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        if self.shN is None or (self.shN.numel() == 0 and self.shN.dim() != 3):  # keep K of an empty [0, K, 3]
            self.shN = torch.zeros(n, 0, 3, dtype=self.means.dtype)
        for name in self.PER_GAUSSIAN:
            t = getattr(self, name)
            if t.shape[0] != n:
                raise ValueError(f"GaussianScene.{name} has {t.shape[0]} rows, means has {n}")
        for name, t in self.extra.items():
            if t.shape[0] != n:
                raise ValueError(f"GaussianScene.extra[{name!r}] has {t.shape[0]} rows, means has {n}")
        if self.shN.shape[1] not in SH_COEFFS_TO_DEGREE:
            raise ValueError(f"shN has {self.shN.shape[1]} coefficients per colour; expected 0, 3, 8 or 15")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return SH_COEFFS_TO_DEGREE[self.shN.shape[1]]

    # activated quantities ------------------------------------------------------
    @property
    def opacity(self) -> torch.Tensor:
        return torch.sigmoid(self.opacities)

    @property
    def scale(self) -> torch.Tensor:
        return torch.exp(self.scales)

    @property
    def rotation(self) -> torch.Tensor:
        """Unit quaternions (w first); zero quaternions become identity."""
        n = self.quats.norm(dim=-1, keepdim=True)
        ident = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=self.quats.dtype).expand_as(self.quats)
        return torch.where(n > 0, self.quats / n.clamp_min(1e-12), ident)

    @property
    def rgb(self) -> torch.Tensor:
        """Base colour from the DC term (view-independent part)."""
        return 0.5 + SH_C0 * self.sh0

    # structure ---------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.PER_GAUSSIAN}

    def subset(self, index: torch.Tensor) -> "GaussianScene":
        """A new scene with the Gaussians selected by a bool mask or an index tensor."""
        return GaussianScene(**{k: v[index] for k, v in self.tensors().items()},
                             extra={k: v[index] for k, v in self.extra.items()}, meta=dict(self.meta))

    def replace(self, **tensors: torch.Tensor) -> "GaussianScene":
        d = self.tensors()
        d.update(tensors)
        return GaussianScene(**d, extra=dict(self.extra), meta=dict(self.meta))

    def clone(self) -> "GaussianScene":
        return GaussianScene(**{k: v.clone() for k, v in self.tensors().items()},
                             extra={k: v.clone() for k, v in self.extra.items()}, meta=dict(self.meta))

    def bytes_per_gaussian(self) -> int:
        """Float32 bytes of one Gaussian as an INRIA PLY stores it (with normals if present)."""
        floats = 3 + 4 + 3 + 1 + 3 + 3 * self.shN.shape[1]
        floats += sum(int(math.prod(t.shape[1:])) for t in self.extra.values())
        return 4 * floats

    def bounds(self, quantile: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Axis-aligned bounds of the means; ``quantile`` > 0 gives robust bounds."""
        if len(self) == 0:
            z = torch.zeros(3)
            return z, z
        if quantile <= 0:
            return self.means.min(0).values, self.means.max(0).values
        q = torch.tensor([quantile, 1 - quantile], dtype=self.means.dtype)
        m = self.means if len(self) <= 1_000_000 else self.means[torch.randperm(len(self))[:1_000_000]]
        lo_hi = torch.quantile(m, q, dim=0)
        return lo_hi[0], lo_hi[1]

    @classmethod
    def empty(cls, sh_degree: int = 0) -> "GaussianScene":
        k = {0: 0, 1: 3, 2: 8, 3: 15}[sh_degree]
        z = lambda *s: torch.zeros(0, *s)  # noqa: E731
        return cls(z(3), z(4), z(3), z(), z(3), z(k, 3))
