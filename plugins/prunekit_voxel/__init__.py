"""prunekit_voxel: TSP3D text-guided sparse voxel pruning (TGP) and completion-based addition (CBA)
in pure PyTorch, with a hashed sparse voxel tensor, voxelisation and open3d IO.

Importing this package is cheap; submodules import torch (and open3d only for file IO).
"""
