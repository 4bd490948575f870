"""Quaternion / rotation / covariance conversions for Gaussians (w-first quaternions).

Sigma = R diag(s^2) R^T, with R the rotation of the normalised quaternion (w, x, y, z).
"""

from __future__ import annotations

import torch


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """[..., 4] quaternions (w, x, y, z; normalised here) -> [..., 3, 3] rotation matrices."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


def rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] proper rotations -> [..., 4] unit quaternions (w >= 0), numerically stable branch per case."""
    m = R.reshape(-1, 3, 3)
    t = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = torch.stack([
        torch.stack([1 + t, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
        torch.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2], m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], -1),
        torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], 1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], m[:, 1, 2] + m[:, 2, 1]], -1),
        torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1], 1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1),
    ], 1)  # [n, 4 cases, 4]
    diag = torch.stack([t, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], -1)
    q = cands[torch.arange(len(m)), diag.argmax(-1)]
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q = torch.where(q[:, :1] < 0, -q, q)
    return q.reshape(*R.shape[:-2], 4)


def covariance(quats: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """[N,4], [N,3] -> [N,3,3] world covariances."""
    R = quat_to_rotmat(quats)
    s2 = torch.exp(2 * log_scales)
    return (R * s2[..., None, :]) @ R.transpose(-1, -2)


def decompose_covariance(cov: torch.Tensor, min_scale: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """[N,3,3] symmetric PSD -> (quats [N,4], log scales [N,3]) with Sigma = R diag(s^2) R^T."""
    evals, evecs = torch.linalg.eigh(0.5 * (cov + cov.transpose(-1, -2)))
    det = torch.linalg.det(evecs)
    evecs = evecs * torch.where(det < 0, -1.0, 1.0).to(evecs.dtype)[:, None, None]  # proper rotation
    scales = evals.clamp_min(min_scale**2).sqrt()
    return rotmat_to_quat(evecs), torch.log(scales)
