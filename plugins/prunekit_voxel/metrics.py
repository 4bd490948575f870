"""Grounding metrics: axis-aligned 3D box IoU and Acc@IoU (ScanRefer's Acc@0.25 / Acc@0.5)."""

from __future__ import annotations

import numpy as np


def box_iou(a, b) -> float:
    """IoU of two axis-aligned boxes ``[cx, cy, cz, dx, dy, dz]``: overlap volume / union volume."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    lo = np.maximum(a[:3] - a[3:] / 2, b[:3] - b[3:] / 2)
    hi = np.minimum(a[:3] + a[3:] / 2, b[:3] + b[3:] / 2)
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    union = float(np.prod(a[3:]) + np.prod(b[3:])) - inter
    return inter / union if union > 0 else 0.0


def accuracy_at(ious, threshold: float) -> float:
    """Fraction of predictions with IoU >= ``threshold``."""
    ious = np.asarray(ious, float)
    return float((ious >= threshold).mean()) if ious.size else float("nan")
