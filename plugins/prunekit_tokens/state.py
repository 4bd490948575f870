"""Per-forward bookkeeping of which original token lives where.

``owner[b, j]`` is, for original token ``j`` of image ``b``, its current position in the
sequence (>= 0), or ``-(1 + p)`` when it was pruned and set aside at position ``p`` of the
pool (the pruned-token store that Last Layer Fusion draws from). Merged tokens point to
the token they were merged into. :meth:`TokenState.restore` rebuilds the full sequence in
the original order: kept tokens from the current sequence, pruned ones from the pool,
merged ones as copies of their destination (ToMe's "unmerge").
"""

from __future__ import annotations

import torch


class TokenState:
    def __init__(self, batch: int, num_tokens: int, device: torch.device, keep_pool: bool):
        self.num_tokens = num_tokens
        self.owner = torch.arange(num_tokens, device=device).expand(batch, num_tokens).clone()
        self.keep_pool = keep_pool
        self.pool: list[torch.Tensor] = []
        self.pool_size = 0
        self.size: torch.Tensor | None = None  # (B, N, 1) merged-token sizes, None = all ones

    def _reindex(self, remap: torch.Tensor) -> None:
        """Apply ``remap`` (B, N_old): old position -> new position or pool code."""
        live = self.owner >= 0
        moved = remap.gather(1, self.owner.clamp(min=0))
        self.owner = torch.where(live, moved, self.owner)

    def prune(self, x: torch.Tensor, kept: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        """Keep ``kept`` positions (B, K) of ``x`` (B, N, C); set ``dropped`` (B, N-K) aside."""
        b, n, c = x.shape
        k, r = kept.shape[1], dropped.shape[1]
        remap = torch.empty(b, n, dtype=torch.long, device=x.device)
        remap.scatter_(1, kept, torch.arange(k, device=x.device).expand(b, k))
        codes = -(1 + self.pool_size + torch.arange(r, device=x.device))
        remap.scatter_(1, dropped, codes.expand(b, r))
        self._reindex(remap)
        if self.keep_pool:
            self.pool.append(x.gather(1, dropped.unsqueeze(-1).expand(b, r, c)))
        self.pool_size += r
        if self.size is not None:
            self.size = self.size.gather(1, kept.unsqueeze(-1))
        return x.gather(1, kept.unsqueeze(-1).expand(b, k, c))

    def moved(self, remap: torch.Tensor, size: torch.Tensor) -> None:
        """Record a merge: ``remap`` (B, N_old) old -> new positions, new token ``size`` (B, N_new, 1)."""
        self._reindex(remap)
        self.size = size

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, C) current tokens -> (B, N0, C) in the original token order."""
        b, n, c = x.shape
        if self.pool_size and not self.keep_pool:
            raise RuntimeError("pruned tokens were not kept aside (Last Layer Fusion is off)")
        bank = torch.cat([x, *self.pool], dim=1) if self.pool else x
        idx = torch.where(self.owner >= 0, self.owner, n + (-self.owner - 1))
        self.owner = torch.arange(self.num_tokens, device=x.device).expand(b, self.num_tokens).clone()
        self.pool, self.pool_size, self.size = [], 0, None
        return bank.gather(1, idx.unsqueeze(-1).expand(b, self.num_tokens, c))

    def kept_original(self, n_current: int) -> torch.Tensor:
        """(B, N0) bool: original tokens still present (not pruned) in a sequence of ``n_current``."""
        return (self.owner >= 0) & (self.owner < n_current)
