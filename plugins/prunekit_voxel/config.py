"""Options of the TSP3D plugin (torch-free: imported by the plugin spec)."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit import option


@dataclass
class Tsp3dConfig:
    """TGP/CBA settings; defaults are the paper's inference values (METHODS.md 8.1)."""

    voxel_size: float = option(0.04, "finest voxel edge in metres")
    scene_threshold: float = option(0.7, "keep-score threshold of the coarser, scene-level TGP")
    target_threshold: float = option(0.3, "keep-score threshold of the finer, target-level TGP")
    cba_threshold: float = option(0.15, "CBA adds a candidate voxel when sigmoid(logit) exceeds this")
    cba_candidates: int = option(2400, "candidate voxels CBA samples from the unpruned finest level")
    min_keep: int = option(1, "voxels every TGP level keeps whatever the scores say")
    tgp: bool = option(True, "text-guided pruning on (off: the unpruned baseline)")
    cba: bool = option(True, "completion-based addition on")

    def __post_init__(self) -> None:
        if self.voxel_size <= 0:
            raise ValueError(f"voxel_size must be > 0, got {self.voxel_size}")
        for name in ("scene_threshold", "target_threshold", "cba_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.cba_candidates < 1 or self.min_keep < 0:
            raise ValueError("cba_candidates must be >= 1 and min_keep >= 0")
