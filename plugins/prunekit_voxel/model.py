"""A small TSP3D-style grounding network: sparse encoder, text-fused neck with TGP and CBA, box head.

Shape (TSP3D, arXiv 2502.10392, scaled down for CPU; METHODS.md 8.1-8.2):

- encoder: a strided 2x2x2 conv from the input voxels (stride 1) to stride 2, then two levels
  of strided conv + submanifold 3x3x3 conv (strides 4, 8); features of every level are kept
  for skips (no 3x3x3 conv at strides 1 and 2: see the README's Approximations);
- text: token features (e.g. all-MiniLM-L6-v2, 384-d) -> Linear + LayerNorm to width ``d``;
- neck, coarse to fine. At each TGP level the voxels go through the voxel-text fusion block
  (:class:`~prunekit_voxel.tgp.TGP`); its text-fused features continue up the neck and its
  logit decides which voxels do: scene-level TGP at stride 8 (keep score >= ``thresholds[0]``),
  restricted upsampling to the encoder's stride-4 sites whose parent survived, skip add,
  submanifold conv; target-level TGP at stride 4 (>= ``thresholds[1]``); restricted upsampling
  to stride 2, skip add, conv; CBA at stride 2 against the *unpruned* stride-2 encoder level;
- head at stride 2: one text-fusion layer, then per voxel an objectness logit and a box
  (centre offset from the voxel centre in metres, log size in metres); the prediction is the
  box of the voxel with the highest objectness.

``forward(..., prune=False)`` is the unpruned baseline (the paper's multi-level baseline with
text fusion at every level): same weights, the fusion blocks run on *every* voxel of their
level and nothing is removed; CBA is skipped. With pruning, the text fusion at stride 4 and
the stride-2 neck + head run only on the voxels that survived, which is where TSP3D's speed-up
comes from. In training, pass ``keep_counts`` for top-k TGP budgets (the paper's training
rule) instead of thresholds; ``keep_ratios`` keeps a fixed fraction of each TGP level (a fixed
operating point; ours, the paper uses thresholds at inference). The voxel counts per level are returned so a benchmark can
report them; TGP logits are returned in both modes (the losses supervise them either way).

``head_context`` (ours, not the paper's; opt-in, default ``"own"`` = the behaviour above): with ``"s8"``
the head fusion's voxel self-attention (and its text->voxel cross-attention) takes its keys/values
from a context computed *before any pruning*: every stride-8 voxel after the scene-level TGP fusion
(``C = fused_s8`` at the centres of the stride-8 voxels, at most ``max_keys`` of them, the same
seeded subset), instead of the head's own stride-2 voxels (a random ``max_keys`` subset of all of
them unpruned, only the survivors pruned). ``C`` is the same tensor in the pruned and unpruned
forward, so relational context ("closest to the table") does not disappear with pruning. ``"s8+s4"``
also gives ``C`` to the stride-4 (target-level) TGP fusion, whose input is pruned by the scene-level
TGP. No new parameters: a checkpoint trained without it loads with it (see
:class:`~prunekit_voxel.fusion.TextVoxelFusion` for the formula).
"""

from __future__ import annotations

import torch
from torch import nn

from .cba import CBA
from .fusion import TextVoxelFusion
from .sparse import DownConv3d, SparseVoxels, SubmConv3d, UpConv3d
from .tgp import TGP, tgp_keep

#: box offsets and log sizes are predicted in units of this many metres
BOX_UNIT = 1.0
#: ``Tsp3dNet(head_context=...)``: "own" (default: fusion blocks attend to their own voxels), "s8" (the head
#: fusion attends to the unpruned text-fused stride-8 level), "s8+s4" (so does the stride-4 TGP fusion)
HEAD_CONTEXTS = ("own", "s8", "s8+s4")


def _relu(x: SparseVoxels) -> SparseVoxels:
    return x.replace(torch.relu(x.feats))


def centers(x: SparseVoxels, voxel_size: float) -> torch.Tensor:
    """World-space voxel centres of a level (``voxel_size`` is the finest edge)."""
    return (x.coords.to(x.feats.dtype) + 0.5) * (voxel_size * x.stride)


class Tsp3dNet(nn.Module):
    def __init__(self, cin: int = 4, d: int = 64, text_dim: int = 384, heads: int = 4, layers: int = 2,
                 max_keys: int = 3200, cba_candidates: int = 2400, cba_layers: int | None = None,
                 head_context: str = "own") -> None:
        super().__init__()
        if head_context not in HEAD_CONTEXTS:
            raise ValueError(f"head_context must be one of {HEAD_CONTEXTS}, got {head_context!r}")
        self.head_context = head_context
        self.stem = DownConv3d(cin, d)  # stride 1 -> 2
        self.down = nn.ModuleList(DownConv3d(d, d) for _ in range(2))
        self.enc = nn.ModuleList(SubmConv3d(d, d) for _ in range(2))
        self.text = nn.Sequential(nn.Linear(text_dim, d), nn.LayerNorm(d))
        self.tgp = nn.ModuleList(TGP(d, heads, layers, max_keys) for _ in range(2))
        self.up = nn.ModuleList(UpConv3d(d, d) for _ in range(2))
        self.dec = nn.ModuleList(SubmConv3d(d, d) for _ in range(2))
        self.cba = CBA(d, heads, layers if cba_layers is None else cba_layers, cba_candidates)
        self.head_fusion = TextVoxelFusion(d, heads, 1, max_keys)
        self.head = nn.Linear(d, 7)

    def encode(self, vox: SparseVoxels) -> list[SparseVoxels]:
        """Encoder levels at strides 2, 4, 8."""
        x = _relu(self.stem(vox))
        levels = [x]
        for down, conv in zip(self.down, self.enc):
            x = _relu(conv(_relu(down(x))))
            levels.append(x)
        return levels

    def fuse(self, i: int, x: SparseVoxels, t: torch.Tensor, text_pad, voxel_size: float, context=None):
        """TGP block ``i`` (0: stride 8, 1: stride 4): (prunable logits, voxels with text-fused features).
        ``context`` (from :meth:`context`) reaches the stride-4 block only with ``head_context="s8+s4"``."""
        ctx = context if i == 1 and self.head_context == "s8+s4" else None
        logits, fused = self.tgp[i](x, centers(x, voxel_size), t, text_pad, context=ctx)
        return logits, x.replace(fused)

    def context(self, fused_s8: SparseVoxels, voxel_size: float):
        """The fixed context of ``head_context != "own"``: (features, centres) of the text-fused stride-8
        voxels *before* the scene-level TGP removes any; None for the default."""
        return None if self.head_context == "own" else (fused_s8.feats, centers(fused_s8, voxel_size))

    def upsample(self, i: int, x: SparseVoxels, skip: SparseVoxels) -> SparseVoxels:
        """Restricted transposed conv onto ``skip``'s sites whose parent is in ``x``, skip add, conv."""
        up, rows = self.up[i](x, skip.coords)
        return _relu(self.dec[i](up.replace(up.feats + skip.feats[rows])))

    def forward(self, vox: SparseVoxels, text: torch.Tensor, text_pad: torch.Tensor | None = None, *,
                voxel_size: float, prune: bool = True, cba: bool = True, thresholds: tuple[float, float] = (0.7, 0.3),
                keep_counts: tuple[int, int] | None = None, keep_ratios: tuple[float, float] | None = None,
                cba_threshold: float | None = None, min_keep: int = 1) -> dict:
        """One scene, one expression. Returns box (6), objectness logits, the stride-2 voxels, the head's
        fused features, TGP logits/sites per level (for the losses), CBA outputs and voxel counts per level."""
        levels = self.encode(vox)
        t = self.text(text)
        out: dict = {"tgp": [], "counts": {"enc_s1": len(vox), **{f"enc_s{v.stride}": len(v) for v in levels}}}
        x, ctx = levels[2], None
        for i, skip in enumerate((levels[1], levels[0])):
            logits, x = self.fuse(i, x, t, text_pad, voxel_size, ctx)
            ctx = self.context(x, voxel_size) if i == 0 else ctx
            out["tgp"].append({"logits": logits, "xyz": centers(x, voxel_size), "stride": x.stride})
            if prune:
                budget = ({"keep_count": keep_counts[i]} if keep_counts else
                          {"keep_ratio": keep_ratios[i]} if keep_ratios else {"threshold": thresholds[i]})
                x = x.select(tgp_keep(logits, min_keep=min_keep, level=f"s{x.stride}", **budget))
            out["counts"][f"neck_s{x.stride}"] = len(x)
            x = self.upsample(i, x, skip)
        if prune and cba:
            res = self.cba(levels[0], x, voxel_size * levels[0].stride, t, text_pad, threshold=cba_threshold)
            out["cba"] = res
            x = res["voxels"]
        out["counts"][f"head_s{x.stride}"] = len(x)
        obj, boxes, feats = self.predict_boxes(x, t, text_pad, voxel_size, return_feats=True, context=ctx)
        out.update(voxels=x, objectness=obj, boxes=boxes, box=boxes[int(obj.argmax())], head_feats=feats)
        return out

    def predict_boxes(self, x: SparseVoxels, t: torch.Tensor, text_pad, voxel_size: float, return_feats: bool = False,
                      context=None):
        """Objectness logit and box per voxel of the last level: ([N], [N, 6] as centre + size in metres).
        Box = (voxel centre + ``BOX_UNIT * o``, ``BOX_UNIT * exp(s)``) for the head's outputs (o, s).
        ``return_feats`` also returns the head's text-fused features ([N, d], the linear head's input);
        ``context``: the head fusion's fixed context (:meth:`context`; None: the voxels attend to each other)."""
        fused, _ = self.head_fusion(x.feats, centers(x, voxel_size), t, text_pad, context=context)
        pred = self.head(fused)
        ctr = centers(x, voxel_size) + pred[:, 1:4] * BOX_UNIT
        dims = torch.exp(pred[:, 4:7].clamp(-6.0, 3.0)) * BOX_UNIT
        res = (pred[:, 0], torch.cat([ctr, dims], 1))
        return (*res, fused) if return_feats else res
