"""Per-image token selection through :func:`prunekit.select`.

Each image of a batch is one scores group and the budget is a per-group keep count
(``Budget(keep_count=K, scope="per_group")``), so every image keeps exactly ``K``
tokens in one ``select`` call. Prefix tokens (CLS, distillation, registers) get a
score of +inf and are therefore always kept (Token Cropr, Sec. 3: the class token is
retained). The core selects per group in a Python loop; on CPU this costs about
50 microseconds per image and module (measured by ``scripts/bench/bench_cropr.py``).
"""

from __future__ import annotations

import torch

from prunekit import Budget
from prunekit.scores import Scores
from prunekit.selection import select


def keep_mask(scores: torch.Tensor, keep: int, num_prefix: int = 0) -> torch.Tensor:
    """(B, N) scores -> (B, N) bool mask with exactly ``keep`` True per row, prefix tokens always kept.

    Higher scores are kept; ties break by token index (the core's stable order).
    """
    if scores.dim() != 2:
        raise ValueError(f"expected (batch, tokens) scores, got shape {tuple(scores.shape)}")
    b, n = scores.shape
    if not num_prefix <= keep <= n:
        raise ValueError(f"cannot keep {keep} of {n} tokens with {num_prefix} prefix tokens")
    s = scores.detach().float().cpu().clone()
    s[:, :num_prefix] = float("inf")
    mask = select(Scores({str(i): s[i] for i in range(b)}), Budget(keep_count=keep, scope="per_group"))
    return torch.stack([mask[str(i)] for i in range(b)]).to(scores.device)


def split_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) bool mask with a fixed count per row -> (kept, dropped) index tensors, ascending per row."""
    b, n = mask.shape
    k = int(mask[0].sum())
    order = torch.arange(n, device=mask.device).expand(b, n)
    kept = order[mask].view(b, k)
    dropped = order[~mask].view(b, n - k)
    return kept, dropped
