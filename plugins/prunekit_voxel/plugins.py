"""Plugin spec for TSP3D (imports only prunekit; heavy code is referenced by name)."""

from __future__ import annotations

from prunekit import Plugin

from .config import Tsp3dConfig

TSP3D = Plugin(
    name="tsp3d",
    domain="sparse-voxels",
    description="TSP3D: text-guided pruning of sparse voxels (TGP) with completion-based addition (CBA), pure PyTorch",
    config=Tsp3dConfig,
    paper="Guo et al., Text-guided Sparse Voxel Pruning for Efficient 3D Visual Grounding, CVPR 2025 (arXiv 2502.10392)",
    scorer="prunekit_voxel.target:tsp3d_scorer",
    target="prunekit_voxel.target:TARGET",
    hooks={
        "tgp": "prunekit_voxel.tgp:TGP",
        "cba": "prunekit_voxel.cba:CBA",
        "voxelize": "prunekit_voxel.voxelize:voxelize",
        "read_points": "prunekit_voxel.io:read_points",
        "scannet": "prunekit_voxel.scannet:load_scannet",
    },
    requires=("torch",),
    extra="voxel",
)
