"""ToMe-style bipartite soft matching (Bolya et al., "Token Merging: Your ViT but Faster",
ICLR 2023, arXiv 2210.09461), implemented from the paper's description.

For a sequence of N tokens (prefix tokens excluded and never merged):

1. split the tokens alternately into sets A (even) and B (odd);
2. similarity = cosine of the attention keys averaged over heads, ``sim = k_A k_B^T``;
3. each A token draws an edge to its most similar B token;
4. the ``r`` A tokens with the most similar edges are merged into their B partners;
   this choice goes through :func:`prunekit.select` (keep the ``|A| - r`` A tokens of
   lowest best-similarity, per image);
5. merged values are size-weighted averages ``x = sum_i s_i x_i / sum_i s_i`` and sizes
   add up; optional proportional attention adds ``log s`` to the attention logits.

Deviation from the paper: ToMe merges between a block's attention and its MLP; forward
hooks cannot reach inside the block, so here merging happens after the block output,
using that block's keys — the same place where Cropr prunes, so both see the same
token budget per block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .selection import keep_mask, split_indices


def bipartite_merge(x: torch.Tensor, keys: torch.Tensor, r: int, num_prefix: int, num_heads: int,
                    size: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge ``r`` tokens of ``x`` (B, N, C). Returns (new x (B, N-r, C), remap (B, N), new size (B, N-r, 1)).

    ``keys`` (B, N, Ck) are the block's attention keys; ``size`` (B, N, 1) the current
    token sizes (None = ones). ``remap`` maps each old position to its new one.
    """
    b, n, c = x.shape
    p = num_prefix
    dev = x.device
    a_pos = torch.arange(p, n, 2, device=dev)
    b_pos = torch.arange(p + 1, n, 2, device=dev)
    na, nb = a_pos.numel(), b_pos.numel()
    if not 0 <= r <= min(na, nb):
        raise ValueError(f"cannot merge {r} tokens: {n - p} mergeable tokens give |A|={na}, |B|={nb}")
    if size is None:
        size = torch.ones(b, n, 1, dtype=x.dtype, device=dev)
    metric = keys.reshape(b, n, num_heads, -1).mean(2)
    metric = F.normalize(metric, dim=-1)
    sim = metric[:, a_pos] @ metric[:, b_pos].transpose(1, 2)  # B, na, nb
    best, match = sim.max(dim=-1)
    a_keep, a_merge = split_indices(keep_mask(-best, na - r))  # positions within A
    dst = match.gather(1, a_merge)  # B, r: destination within B

    xs = x * size
    xa, sa = xs[:, a_pos], size[:, a_pos]
    xb = xs[:, b_pos].scatter_add(1, dst.unsqueeze(-1).expand(b, r, c), xa.gather(1, a_merge.unsqueeze(-1).expand(b, r, c)))
    sb = size[:, b_pos].scatter_add(1, dst.unsqueeze(-1), sa.gather(1, a_merge.unsqueeze(-1)))
    ka = na - r
    new_x = torch.cat([x[:, :p], xa.gather(1, a_keep.unsqueeze(-1).expand(b, ka, c)) / sa.gather(1, a_keep.unsqueeze(-1)), xb / sb], 1)
    new_size = torch.cat([size[:, :p], sa.gather(1, a_keep.unsqueeze(-1)), sb], 1)

    remap = torch.empty(b, n, dtype=torch.long, device=dev)
    remap[:, :p] = torch.arange(p, device=dev)
    remap[:, b_pos] = p + ka + torch.arange(nb, device=dev)
    a_new = torch.empty(b, na, dtype=torch.long, device=dev)
    a_new.scatter_(1, a_keep, p + torch.arange(ka, device=dev).expand(b, ka))
    a_new.scatter_(1, a_merge, p + ka + dst)
    remap[:, a_pos] = a_new
    return new_x, remap, new_size
