"""Pinhole cameras in gsplat's convention.

``viewmat`` is the 4x4 world-to-camera matrix in OpenCV axes (x right, y down, z
forward); ``K`` the 3x3 intrinsics in pixels. (Readers and view synthesis are added in
this module: see ``load_cameras`` and ``synthesize_cameras``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Camera:
    viewmat: torch.Tensor  # [4, 4] world -> camera, OpenCV axes
    K: torch.Tensor  # [3, 3] pixels
    width: int
    height: int
    name: str = ""
    image_path: str | None = None

    @property
    def position(self) -> torch.Tensor:
        """Camera centre in world coordinates."""
        R, t = self.viewmat[:3, :3], self.viewmat[:3, 3]
        return -R.T @ t

    def scaled(self, factor: float) -> "Camera":
        """The same camera at ``factor`` times the resolution (intrinsics scaled)."""
        K = self.K.clone()
        K[:2] *= factor
        return Camera(self.viewmat.clone(), K, max(1, round(self.width * factor)), max(1, round(self.height * factor)),
                      self.name, self.image_path)
