"""Tasks for Cropr training and evaluation: image classification and a pixel-mask task.

- :class:`ClassificationTask`: cross-entropy on logits; an auxiliary head predicts the
  class from its aggregated queries (logits averaged over queries; one query by default).
- :class:`MaskTask`: per-pixel classes (e.g. background / digit). The segmenter is a
  linear patch decoder (each patch token -> ``p*p*K`` pixel logits, as in Segmenter's
  linear baseline). The auxiliary heads put their queries on a coarse output grid
  (``aux_grid``, default 1x1): query ``j`` predicts the pixel logits of region ``j``.
  Cropr's reference segmentation setup uses one query per patch; but its token score is
  ``(sum_j q_j) . k_n``, a single direction in token space, and with one query per patch
  the queries learn to find their own position, so the summed score ranks tokens by
  position rather than content (on the cluttered-MNIST mask task it ranked the digit
  tokens lowest). A coarse grid makes each query look for the object. Loss: class-weighted
  pixel cross-entropy; metric: IoU per class and their mean (mIoU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ClassificationTask:
    num_classes: int

    @property
    def num_queries(self) -> int:
        return 1

    @property
    def aux_out(self) -> int:
        return self.num_classes

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target)

    def aux_loss(self, aux: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(aux.mean(1), target)


def grid_to_pixels(tokens: torch.Tensor, grid: tuple[int, int], cell: tuple[int, int], k: int) -> torch.Tensor:
    """(B, gh*gw, ch*cw*K) per-cell logits -> (B, K, gh*ch, gw*cw) pixel logits."""
    b = tokens.shape[0]
    (gh, gw), (ch, cw) = grid, cell
    t = tokens.view(b, gh, gw, ch, cw, k)
    return t.permute(0, 5, 1, 3, 2, 4).reshape(b, k, gh * ch, gw * cw)


@dataclass
class MaskTask:
    num_classes: int
    grid: tuple[int, int]  # patch grid of the model
    patch: int
    class_weights: tuple[float, ...] = ()
    aux_grid: tuple[int, int] = (1, 1)  # query grid of the auxiliary heads

    def __post_init__(self) -> None:
        h, w = self.grid[0] * self.patch, self.grid[1] * self.patch
        if h % self.aux_grid[0] or w % self.aux_grid[1]:
            raise ValueError(f"aux grid {self.aux_grid} does not divide the {h}x{w} output")

    @property
    def num_queries(self) -> int:
        return self.aux_grid[0] * self.aux_grid[1]

    @property
    def aux_cell(self) -> tuple[int, int]:
        return self.grid[0] * self.patch // self.aux_grid[0], self.grid[1] * self.patch // self.aux_grid[1]

    @property
    def aux_out(self) -> int:
        ch, cw = self.aux_cell
        return ch * cw * self.num_classes

    @property
    def decoder_out(self) -> int:
        return self.patch * self.patch * self.num_classes

    def to_pixels(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, gh*gw, p*p*K) decoder outputs -> (B, K, gh*p, gw*p) pixel logits."""
        return grid_to_pixels(tokens, self.grid, (self.patch, self.patch), self.num_classes)

    def aux_to_pixels(self, aux: torch.Tensor) -> torch.Tensor:
        """(B, Q, cell*K) auxiliary outputs -> (B, K, H, W) pixel logits."""
        return grid_to_pixels(aux, self.aux_grid, self.aux_cell, self.num_classes)

    def _weights(self, ref: torch.Tensor):
        return ref.new_tensor(self.class_weights) if self.class_weights else None

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self._weights(logits))

    def aux_loss(self, aux: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(self.aux_to_pixels(aux), target)


class ViTSegmenter(nn.Module):
    """A transformers ``ViTModel`` backbone + linear patch decoder -> (B, K, H, W) logits.

    Needs the full patch sequence at the output: use Last Layer Fusion when pruning.
    """

    def __init__(self, backbone: nn.Module, task: MaskTask, num_prefix: int = 1):
        super().__init__()
        self.backbone = backbone
        self.task = task
        self.num_prefix = num_prefix
        self.decoder = nn.Linear(backbone.config.hidden_size, task.decoder_out)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h = self.backbone(pixel_values).last_hidden_state[:, self.num_prefix:]
        n = self.task.grid[0] * self.task.grid[1]
        if h.shape[1] != n:
            raise RuntimeError(f"decoder needs {n} patch tokens, got {h.shape[1]} "
                               "(prune with Last Layer Fusion for dense outputs)")
        return self.task.to_pixels(self.decoder(h))


def confusion(pred: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """(K, K) counts, rows = target class, columns = predicted class."""
    idx = target.reshape(-1).long() * k + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=k * k).view(k, k)


def iou_from_confusion(conf: torch.Tensor) -> torch.Tensor:
    """Per-class IoU ``TP / (TP + FP + FN)``."""
    tp = conf.diag().double()
    denom = conf.sum(0).double() + conf.sum(1).double() - tp
    return tp / denom.clamp(min=1)
