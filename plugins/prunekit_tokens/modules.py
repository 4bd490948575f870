"""The Cropr module: a cross-attention scorer with an auxiliary (training-only) branch.

Following Token Cropr (Bergner et al., CVPR 2025, arXiv 2412.00965, Sec. 3):

- ``Q`` learnable queries ``q_j`` attend over the block's tokens ``x`` (detached: the
  scorer never sends gradients into the backbone). Keys are ``k = W_k LN(x)`` with
  ``W_k = I`` by default (likewise ``W_q``).
- Token score: the pre-softmax attention logits summed over heads and queries,
  ``s_n = sum_j sum_h q_{j,h} . k_{n,h} = (sum_j q_j) . k_n`` — the per-head dot products
  add up to the full dot product, so scoring costs one matrix-vector product per image.
- Auxiliary branch (training): ``a_j = softmax_n(q_{j,h} . k_{n,h} / sqrt(d_h)) v_{n,h}``
  per head (values ``v = W_v LN(x)``, ``W_v = I`` by default), an output projection when
  there is more than one head, a residual MLP ``a + MLP(LN(a))``, then the task head
  ``LN + Linear``. Its loss (the main task's loss on the main target) is what teaches
  the queries which tokens matter; selection itself is not differentiated.
- :meth:`CroprModule.remove_aux_heads` deletes the branch: inference keeps only the
  queries, the optional norm and projections.

Option (not in the paper): ``exclude_prefix=p`` hides the first ``p`` tokens (CLS, ...)
from the auxiliary aggregation. In deep modules the CLS token already carries the class,
so a query can solve the auxiliary task by attending to CLS alone and the patch scores
stop meaning anything; on cluttered MNIST the last module then kept digit patches no
better than chance. Hiding the prefix makes the queries rank patches; *which* patches is
whatever the auxiliary head reads most easily (on an under-trained cluttered-MNIST classifier:
background tokens, see the package README, *Known limits*).
"""

from __future__ import annotations

import torch
from torch import nn


class AuxBranch(nn.Module):
    """Aggregation (softmax cross-attention over values) -> MLP -> LN + Linear task head."""

    def __init__(self, dim: int, num_heads: int, v_proj: bool, mlp_ratio: float, out_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.v = nn.Linear(dim, dim, bias=False) if v_proj else nn.Identity()
        self.proj = nn.Linear(dim, dim) if num_heads > 1 else nn.Identity()
        hidden = max(1, int(dim * mlp_ratio))
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.head_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, logits: torch.Tensor, keys_in: torch.Tensor, exclude_prefix: int = 0) -> torch.Tensor:
        """``logits`` (B, H, Q, N) pre-softmax, ``keys_in`` (B, N, C) normed tokens -> (B, Q, out_dim)."""
        b, h, q, n = logits.shape
        c = keys_in.shape[-1]
        d = c // h
        v = self.v(keys_in).view(b, n, h, d).transpose(1, 2)  # B, H, N, d
        logits = logits * d**-0.5
        if exclude_prefix:
            logits = logits.clone()
            logits[..., :exclude_prefix] = float("-inf")
        attn = torch.softmax(logits, dim=-1)
        agg = (attn @ v).transpose(1, 2).reshape(b, q, c)
        agg = self.proj(agg)
        agg = agg + self.mlp(self.mlp_norm(agg))
        return self.head(self.head_norm(agg))


class CroprModule(nn.Module):
    """Scores tokens for pruning; in training also predicts the task from them (auxiliary head)."""

    def __init__(self, dim: int, num_heads: int, num_queries: int = 1, pre_norm: bool = True,
                 qk_proj: bool = False, v_proj: bool = False, mlp_ratio: float = 4.0, aux_out: int = 0,
                 exclude_prefix: int = 0):
        super().__init__()
        self.exclude_prefix = exclude_prefix
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.dim, self.num_heads, self.num_queries = dim, num_heads, num_queries
        self.queries = nn.Parameter(torch.empty(num_queries, dim))
        nn.init.trunc_normal_(self.queries, std=dim**-0.5)
        self.norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()
        self.q_proj = nn.Linear(dim, dim, bias=False) if qk_proj else None
        self.k_proj = nn.Linear(dim, dim, bias=False) if qk_proj else None
        self.aux = AuxBranch(dim, num_heads, v_proj, mlp_ratio, aux_out) if aux_out else None

    @property
    def has_aux(self) -> bool:
        return self.aux is not None

    def remove_aux_heads(self) -> None:
        """Delete the auxiliary branch (its parameters leave the module)."""
        self.aux = None

    def _queries(self) -> torch.Tensor:
        return self.q_proj(self.queries) if self.q_proj is not None else self.queries

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens -> (B, N) scores ``(sum_j q_j) . k_n`` (pre-softmax, summed over heads and queries)."""
        q_sum = self._queries().sum(0)
        if self.k_proj is not None:  # q . (W x) = (W^T q) . x
            q_sum = q_sum @ self.k_proj.weight
        return self.norm(x) @ q_sum

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Detaches ``x``; returns (scores (B, N), auxiliary prediction (B, Q, out) or None)."""
        x = x.detach()
        scores = self.scores(x)
        if self.aux is None or not self.training:
            return scores, None
        logits, kin = self.attention_logits(x)
        return scores, self.aux(logits, kin, self.exclude_prefix)

    def attention_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, C) tokens -> per-head pre-softmax logits ``q_{j,h} . k_{n,h}`` (B, H, Q, N) and ``LN(x)``.

        Summed over heads and queries they equal :meth:`scores`."""
        kin = self.norm(x)
        keys = self.k_proj(kin) if self.k_proj is not None else kin
        b, n, c = keys.shape
        h, d = self.num_heads, c // self.num_heads
        q = self._queries().view(self.num_queries, h, d).transpose(0, 1)  # H, Q, d
        return torch.einsum("hqd,bnhd->bhqn", q, keys.view(b, n, h, d)), kin
