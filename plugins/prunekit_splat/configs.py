"""Config dataclasses of the splat plugins (no torch at import: the plugin specs use them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import prunekit
from prunekit import option


@dataclass
class NoConfig:
    pass


@dataclass
class RandomConfig:
    seed: int = option(0, "random seed of the permutation")


@dataclass
class LightGaussianConfig:
    v_pow: float = option(0.1, "beta: volume power of gamma(V) = (V / V_ref)^beta")
    ref_rank: float = option(0.9, "V_ref = volume at this rank fraction of the descending volume sort")


@dataclass
class RadSplatConfig:
    antialiased: bool = option(True, "score with the area-preserving (antialiased) alpha, so sub-pixel splats "
                                     "do not count as dominating a ray; false = the plain 3DGS alpha")


@dataclass
class SundaeConfig:
    band_weight: float = option(0.5, "omega: share of the budget kept from the high-pass end; 1 - omega from the low end")
    max_neighbors: int = option(16, "neighbour cap of the radius graph (paper: 100)")
    nn_quantile: float = option(0.0, "radius from this quantile of the nearest-neighbour distances instead of "
                                     "their minimum (0 = paper; ours, for scenes with near-duplicate centres)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.band_weight <= 1.0:
            raise ValueError(f"--band-weight must be in [0, 1], got {self.band_weight}")
        if not 0.0 <= self.nn_quantile <= 1.0:
            raise ValueError(f"--nn-quantile must be in [0, 1], got {self.nn_quantile}")
        if self.max_neighbors < 1:
            raise ValueError(f"--max-neighbors must be >= 1, got {self.max_neighbors}")

    def budget(self, budget: prunekit.Budget) -> prunekit.Budget:
        """Two-band keep rule: floor(N*rho*omega) highest and the rest from the lowest scores."""
        if budget.keep_ratio is None and budget.keep_count is None:
            return budget
        return dataclasses.replace(budget, low_fraction=1.0 - self.band_weight)
