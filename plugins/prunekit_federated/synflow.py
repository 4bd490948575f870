"""SynFlow: data-free one-shot pruning at initialisation (HideNseek's server step).

Tanaka et al., "Pruning neural networks without any data by iteratively conserving
synaptic flow", NeurIPS 2020 (arXiv 2006.05467). With every parameter replaced by its
absolute value (and the current mask applied), an all-ones input and the network in
eval mode (BN at its initial statistics), R = sum of the output; the score of weight
theta is |dR/dtheta * theta|. Pruning is iterative: at iteration k = 1..n the mask
keeps the top density^(k/n) fraction of all prunable weights (global ranking through
:func:`prunekit.select`; already-pruned weights score NaN, i.e. lowest).
"""

from __future__ import annotations

import copy

import torch

from prunekit import Budget, Mask, Scores, select

from .masks import prunable_shapes


def synflow_scores(model: torch.nn.Module, mask: Mask, input_shape: tuple[int, ...]) -> Scores:
    """One SynFlow scoring pass (float64, model copied, original untouched)."""
    net = copy.deepcopy(model).double().eval()
    named = dict(net.named_parameters())
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
        for k, m in mask.groups.items():
            named[k].mul_(m.view_as(named[k]).to(torch.float64))
    if hasattr(net, "set_masks"):
        net.set_masks(mask)
    net.zero_grad()
    out = net(torch.ones((1, *input_shape), dtype=torch.float64))
    out.sum().backward()
    groups = {}
    for k, m in mask.groups.items():
        s = (named[k].grad * named[k]).abs().flatten().detach()
        groups[k] = torch.where(m, s, torch.full_like(s, float("nan")))
    return Scores(groups)


def synflow_mask(model: torch.nn.Module, density: float, input_shape: tuple[int, ...], iterations: int = 100) -> Mask:
    """Iterative SynFlow mask at ``density`` over the conv/linear weights."""
    shapes = prunable_shapes(model)
    mask = Mask.full({k: int(torch.Size(s).numel()) for k, s in shapes.items()})
    if density >= 1.0:
        return mask
    for k in range(1, iterations + 1):
        scores = synflow_scores(model, mask, input_shape)
        mask = select(scores, Budget(keep_ratio=density ** (k / iterations), scope="global"))
    return mask
