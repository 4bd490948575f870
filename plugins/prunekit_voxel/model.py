"""A small TSP3D-style grounding network: sparse encoder, top-down neck with TGP and CBA, box head.

Shape (TSP3D, arXiv 2502.10392, scaled down for CPU; METHODS.md 8.1-8.2):

- encoder: stem submanifold conv at stride 1, then three levels of strided 2x2x2 conv +
  submanifold conv (strides 2, 4, 8); features of every level are kept for skips;
- text: token features (e.g. all-MiniLM-L6-v2, 384-d) -> Linear + LayerNorm to width ``d``;
- neck, coarse to fine: scene-level TGP at stride 8 (keep score >= ``scene_threshold``),
  restricted upsampling to the encoder's stride-4 sites whose parent survived, skip add,
  submanifold conv; target-level TGP at stride 4 (>= ``target_threshold``); restricted
  upsampling to stride 2, skip add, conv; CBA at stride 2 against the *unpruned* stride-2
  encoder level;
- head at stride 2: one text-fusion layer, then per voxel an objectness logit and a box
  (centre offset from the voxel centre, log size); the prediction is the box of the voxel
  with the highest objectness.

``forward(..., prune=False)`` is the unpruned baseline: same weights, TGP and CBA skipped
(every encoder site goes up the neck). In training, pass ``keep_counts`` for top-k TGP
budgets (the paper's training rule) instead of thresholds. The voxel counts per level are
returned so a benchmark can report them.
"""

from __future__ import annotations

import torch
from torch import nn

from .cba import CBA
from .fusion import TextVoxelFusion
from .sparse import DownConv3d, SparseVoxels, SubmConv3d, UpConv3d
from .tgp import TGP, tgp_keep


def _relu(x: SparseVoxels) -> SparseVoxels:
    return x.replace(torch.relu(x.feats))


def centers(x: SparseVoxels, voxel_size: float) -> torch.Tensor:
    """World-space voxel centres of a level (``voxel_size`` is the finest edge)."""
    return (x.coords.to(x.feats.dtype) + 0.5) * (voxel_size * x.stride)


class Tsp3dNet(nn.Module):
    def __init__(self, cin: int = 4, d: int = 64, text_dim: int = 384, heads: int = 4, layers: int = 2,
                 max_keys: int = 3200, cba_candidates: int = 2400) -> None:
        super().__init__()
        self.stem = SubmConv3d(cin, d)
        self.down = nn.ModuleList(DownConv3d(d, d) for _ in range(3))
        self.enc = nn.ModuleList(SubmConv3d(d, d) for _ in range(3))
        self.text = nn.Sequential(nn.Linear(text_dim, d), nn.LayerNorm(d))
        self.tgp = nn.ModuleList(TGP(d, heads, layers, max_keys) for _ in range(2))
        self.up = nn.ModuleList(UpConv3d(d, d) for _ in range(2))
        self.dec = nn.ModuleList(SubmConv3d(d, d) for _ in range(2))
        self.cba = CBA(d, heads, layers, cba_candidates)
        self.head_fusion = TextVoxelFusion(d, heads, 1, max_keys)
        self.head = nn.Linear(d, 7)

    def encode(self, vox: SparseVoxels) -> list[SparseVoxels]:
        x = _relu(self.stem(vox))
        levels = [x]
        for down, conv in zip(self.down, self.enc):
            x = _relu(conv(_relu(down(x))))
            levels.append(x)
        return levels  # strides 1, 2, 4, 8

    def forward(self, vox: SparseVoxels, text: torch.Tensor, text_pad: torch.Tensor | None = None, *,
                voxel_size: float, prune: bool = True, cba: bool = True, thresholds: tuple[float, float] = (0.7, 0.3),
                keep_counts: tuple[int, int] | None = None, cba_threshold: float | None = None,
                min_keep: int = 1) -> dict:
        """One scene, one expression. Returns box (6), objectness logits, the stride-2 voxels,
        TGP logits/sites per level (for the losses), CBA outputs and voxel counts per level."""
        levels = self.encode(vox)
        t = self.text(text)
        out: dict = {"tgp": [], "counts": {f"enc_s{v.stride}": len(v) for v in levels}}
        x = levels[3]
        for i, skip in enumerate((levels[2], levels[1])):
            if prune:
                logits, _ = self.tgp[i](x, centers(x, voxel_size), t, text_pad)
                budget = {"keep_count": keep_counts[i]} if keep_counts else {"threshold": thresholds[i]}
                keep = tgp_keep(logits, min_keep=min_keep, level=f"s{x.stride}", **budget)
                out["tgp"].append({"logits": logits, "xyz": centers(x, voxel_size), "stride": x.stride})
                x = x.select(keep)
            out["counts"][f"neck_s{x.stride}"] = len(x)
            up, rows = self.up[i](x, skip.coords)
            x = _relu(self.dec[i](up.replace(up.feats + skip.feats[rows])))
        if prune and cba:
            res = self.cba(levels[1], x, voxel_size * levels[1].stride, t, text_pad, threshold=cba_threshold)
            out["cba"] = res
            x = res["voxels"]
        out["counts"][f"head_s{x.stride}"] = len(x)
        obj, boxes = self.predict_boxes(x, t, text_pad, voxel_size)
        out.update(voxels=x, objectness=obj, boxes=boxes, box=boxes[int(obj.argmax())])
        return out

    def predict_boxes(self, x: SparseVoxels, t: torch.Tensor, text_pad, voxel_size: float):
        """Objectness logit and box (centre offset from the voxel centre and log-size, both in units
        of the voxel edge) per voxel of the last level: ([N], [N, 6] as centre + size in metres)."""
        fused, _ = self.head_fusion(x.feats, centers(x, voxel_size), t, text_pad)
        pred = self.head(fused)
        size = voxel_size * x.stride
        ctr = centers(x, voxel_size) + pred[:, 1:4] * size
        dims = torch.exp(pred[:, 4:7].clamp(max=6.0)) * size
        return pred[:, 0], torch.cat([ctr, dims], 1)
