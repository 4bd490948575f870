"""Options of the TSP3D plugin (torch-free: imported by the plugin spec)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from prunekit import Budget, option
from prunekit.errors import UsageError


@dataclass
class Tsp3dConfig:
    """TGP/CBA settings; defaults are the paper's inference values (METHODS.md 8.1)."""

    voxel_size: Optional[float] = option(None, "finest voxel edge in metres (default: the checkpoint's, the size it was trained at)")
    scene_threshold: float = option(0.7, "keep-score threshold of the coarser, scene-level TGP")
    scene_keep: Optional[float] = option(None, "keep this fraction of the scene-level voxels instead of "
                                               "--scene-threshold (the benchmarks' operating points, e.g. 0.4 with "
                                               "--keep 0.25)")
    target_threshold: float = option(0.3, "keep-score threshold of the finer, target-level TGP (the file command's "
                                          "default budget)")
    target_keep: Optional[float] = option(None, "file command: keep this fraction of the target-level voxels instead "
                                                "of --target-threshold")
    target_count: Optional[int] = option(None, "file command: keep this many target-level voxels instead of "
                                               "--target-threshold")
    cba_threshold: float = option(0.15, "CBA adds a candidate voxel when sigmoid(logit) exceeds this")
    cba_candidates: int = option(2400, "candidate voxels CBA samples from the unpruned finest level")
    min_keep: int = option(1, "voxels every TGP level keeps whatever the scores say")
    tgp: bool = option(True, "text-guided pruning on (off: the unpruned baseline)")
    cba: bool = option(True, "completion-based addition on")

    def __post_init__(self) -> None:
        if self.voxel_size is not None and self.voxel_size <= 0:
            raise ValueError(f"voxel_size must be > 0, got {self.voxel_size}")
        for name in ("scene_threshold", "target_threshold", "cba_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.cba_candidates < 1 or self.min_keep < 0:
            raise ValueError("cba_candidates must be >= 1 and min_keep >= 0")
        if self.scene_keep is not None and not 0.0 < self.scene_keep <= 1.0:
            raise ValueError(f"scene_keep must be in (0, 1], got {self.scene_keep}")
        if self.target_keep is not None and self.target_count is not None:
            raise ValueError("give at most one of --target-keep and --target-count")

    def budget_option(self, given: Budget | None = None) -> Budget:
        """The budget of the target-level TGP in ``prunekit prune -m tsp3d`` (the core ``select`` there).

        The paper prunes by threshold, so there is always one: ``--keep/--count/--threshold`` when
        given (with the ``min_keep`` floor), else ``--target-keep R`` or ``--target-count N``, else
        ``--target-threshold`` (0.3).
        """
        own = self.target_keep is not None or self.target_count is not None
        if not self.tgp and (own or given is not None or self.scene_keep is not None):
            raise UsageError("--no-tgp keeps every voxel: no keep budget applies")
        if given is not None:
            if own:
                raise UsageError("give either --keep/--count/--threshold or --target-keep/--target-count, not both")
            return replace(given, floor=max(given.floor, self.min_keep))
        try:
            if self.target_keep is not None:
                return Budget(keep_ratio=self.target_keep, floor=self.min_keep)
            if self.target_count is not None:
                return Budget(keep_count=self.target_count, floor=self.min_keep)
            return Budget(threshold=self.target_threshold, floor=self.min_keep)
        except ValueError as e:
            raise UsageError(f"target-level budget: {e}") from None
