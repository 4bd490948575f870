"""Does a Cropr scorer rank the task-relevant tokens first? Ranking AUC against known tokens.

For one image with token scores ``s`` and a relevance label per token (e.g. "this 8x8
patch contains digit pixels"), the ranking AUC is the Mann-Whitney statistic

    AUC = P(s_relevant > s_background) = (sum of the relevant tokens' ranks - P (P + 1) / 2) / (P * B)

(ranks 1..N in ascending score order, ``P`` relevant and ``B`` background tokens). 1 means
every relevant token outranks every background token, 0.5 chance, 0 the exact reverse.
Token Cropr keeps the top scores (Bergner et al., CVPR 2025, Sec. 3), so a useful scorer
has AUC well above 0.5. :func:`record_rankings` hooks every Cropr module of a reducer and
collects, per module, the scores of the tokens that module saw, mapped back to the
original patches (earlier modules may have pruned some).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patch_relevance(mask: torch.Tensor, patch: int, min_pixels: int = 1) -> torch.Tensor:
    """(B, H, W) bool pixel mask -> (B, (H/p)*(W/p)) bool: patches with >= ``min_pixels`` mask pixels."""
    m = mask.float().unsqueeze(1)
    counts = F.avg_pool2d(m, patch) * patch * patch
    return (counts.flatten(1) >= min_pixels - 1e-6)


def ranking_auc(scores: torch.Tensor, relevant: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image AUC of (B, N) ``scores`` for (B, N) bool ``relevant`` among ``valid`` tokens.

    Images without both relevant and background (valid) tokens give NaN. Ties get the mean rank.
    """
    if scores.shape != relevant.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(relevant.shape)} differ in shape")
    valid = torch.ones_like(relevant) if valid is None else valid
    out = torch.full((scores.shape[0],), float("nan"), dtype=torch.float64)
    for i in range(scores.shape[0]):
        s = scores[i][valid[i]].double()
        r = relevant[i][valid[i]]
        p, b = int(r.sum()), int((~r).sum())
        if p == 0 or b == 0:
            continue
        less = (s[:, None] > s[None, :]).double().sum(1)
        equal = (s[:, None] == s[None, :]).double().sum(1)
        ranks = less + (equal + 1) / 2  # mean rank of ties, 1-based
        out[i] = (ranks[r].sum() - p * (p + 1) / 2) / (p * b)
    return out


class record_rankings:
    """Context manager: while active, every forward of ``reducer``'s Cropr modules records

    ``inputs[k]`` the (B, n, C) tokens module ``k`` scored, ``scores[k]`` its (B, n) scores and
    ``origin[k]`` (B, n) the original token index of each position (-1 for none).
    """

    def __init__(self, reducer):
        self.reducer = reducer
        self.inputs: dict[int, list] = {}
        self.scores: dict[int, list] = {}
        self.origin: dict[int, list] = {}
        self._handles = []

    def __enter__(self):
        for k, mod in enumerate(self.reducer.cropr):
            self._handles.append(mod.register_forward_hook(self._hook(k)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []

    def _hook(self, k: int):
        def hook(module, args, output):
            x = args[0].detach()
            owner = self.reducer.state.owner  # original token -> current position (before this module prunes)
            b, n = x.shape[:2]
            origin = torch.full((b, n), -1, dtype=torch.long)
            live = owner >= 0
            rows = torch.arange(b)[:, None].expand_as(owner)
            cols = torch.arange(owner.shape[1])[None].expand_as(owner)
            origin[rows[live], owner[live]] = cols[live]
            self.inputs.setdefault(k, []).append(x)
            self.scores.setdefault(k, []).append(output[0].detach())
            self.origin.setdefault(k, []).append(origin)
        return hook

    def module_auc(self, k: int, relevant_tokens: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image AUC of module ``k`` against (B, N0) original-token relevance (prefix tokens excluded).

        ``scores``: other (B, n) scores for the same tokens (default: the module's own)."""
        s = torch.cat(self.scores[k]) if scores is None else scores
        origin = torch.cat(self.origin[k])
        num_prefix = self.reducer.host.num_prefix
        valid = origin >= num_prefix
        rel = relevant_tokens.gather(1, origin.clamp(min=0)) & valid
        return ranking_auc(s, rel, valid)
