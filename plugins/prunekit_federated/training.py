"""Client-side local computation: masked SGD, BN adaptation, top-k gradients, extrusion,
sign-supermask training, evaluation. Dense compute with masks applied (sparsity is
simulated in compute; it is real in transport and in the reported storage figures).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from prunekit import Budget, Mask, Scores, select

from .masks import apply_mask, mask_gradients
from .sap import ActivationMeter


@dataclass
class LocalResult:
    loss: float = 0.0
    examples: int = 0
    steps: int = 0
    activation_bytes: int = 0  # saved-for-backward bytes of one training step (first batch)
    step_peak_bytes: int | None = None  # measured peak heap of that step above its start (sap.ActivationMeter)
    grad_sum: dict[str, torch.Tensor] = field(default_factory=dict)


def batches(n: int, batch_size: int, seed: int):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def train_local(model: torch.nn.Module, data, mask: Mask | None, *, epochs: int, batch_size: int, lr: float,
                momentum: float, seed: int, penalty: Callable[[torch.nn.Module], torch.Tensor] | None = None,
                collect_grads: Mapping[str, torch.Tensor] | None = None,
                params: list[torch.nn.Parameter] | None = None) -> LocalResult:
    """Masked SGD: pruned weights get no gradient and stay exactly zero.

    ``penalty(model)`` is added to the loss (FedMef's extrusion). ``collect_grads``
    (name -> inactive mask) accumulates the dense gradient of those weights, before
    masking, over all local steps (FedTiny's grow signal).
    """
    model.train()
    if mask is not None and hasattr(model, "set_masks"):
        model.set_masks(mask)
    named = dict(model.named_parameters())
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    sums = {k: torch.zeros(named[k].numel()) for k in (collect_grads or {})}

    def loss_of(x, y):
        loss = F.cross_entropy(model(x), y)
        return loss + penalty(model) if penalty is not None else loss

    def after_backward():
        for k in sums:
            g = named[k].grad
            if g is not None:
                sums[k] += g.detach().flatten()
        if mask is not None:
            mask_gradients(model, mask)

    def after_step():
        if mask is not None:
            apply_mask(model, mask)

    res = sgd_epochs(model, data, opt, loss_of, epochs=epochs, batch_size=batch_size, seed=seed,
                     after_backward=after_backward, after_step=after_step)
    res.grad_sum = {k: v / max(res.steps, 1) for k, v in sums.items()}
    return res


def _record_step(res: LocalResult, meter: ActivationMeter) -> None:
    """Activation bytes and the heap peak of the first step (sampled after backward and step too)."""
    meter.sample()
    res.activation_bytes = meter.bytes
    res.step_peak_bytes = meter.peak_heap_bytes


def sgd_epochs(model: torch.nn.Module, data, opt, loss_of: Callable, *, epochs: int, batch_size: int, seed: int,
               after_backward: Callable[[], None] | None = None,
               after_step: Callable[[], None] | None = None) -> LocalResult:
    """The local loop both client kinds share: seeded batches, ``loss_of(x, y)``, backward,
    ``after_backward`` (gradient masking), step, ``after_step`` (re-masking); the first step's
    activation memory is measured. Returns steps, examples per epoch and the mean loss."""
    res = LocalResult()
    total = 0.0
    for epoch in range(epochs):
        for idx in batches(len(data), batch_size, seed * 1000 + epoch):
            x, y = data.x[idx], data.y[idx]
            opt.zero_grad(set_to_none=True)
            meter = ActivationMeter(model) if res.steps == 0 else None
            with meter or contextlib.nullcontext():
                loss = loss_of(x, y)
            loss.backward()
            if after_backward is not None:
                after_backward()
            opt.step()
            if after_step is not None:
                after_step()
            if meter is not None:
                _record_step(res, meter)
            total += float(loss.detach()) * len(idx)
            res.examples += len(idx)
            res.steps += 1
    res.examples //= max(epochs, 1)
    res.loss = total / max(res.examples * epochs, 1)
    return res


def topk_inactive(grad: torch.Tensor, inactive: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and values of the ``k`` largest-|g| inactive entries (through select)."""
    k = min(int(k), int(inactive.sum()))
    score = torch.where(inactive, grad.abs().to(torch.float64), torch.full_like(grad, float("nan"), dtype=torch.float64))
    chosen = select(Scores.single(score), Budget(keep_count=k)).only & inactive
    idx = chosen.nonzero().flatten()
    return idx, grad[idx]


def extrusion_penalty(low: Mask, lam: float) -> Callable[[torch.nn.Module], torch.Tensor]:
    """FedMef budget-aware extrusion term lambda * ||w_low||^2 over the soon-pruned weights."""
    def penalty(model: torch.nn.Module) -> torch.Tensor:
        named = dict(model.named_parameters())
        total = torch.zeros(())
        for k, m in low.groups.items():
            if bool(m.any()):
                total = total + (named[k].flatten()[m] ** 2).sum()
        return lam * total
    return penalty


def bn_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    out = []
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            out.extend(p for p in mod.parameters(recurse=False))
    return out


def bn_state_names(model: torch.nn.Module) -> list[str]:
    names = []
    for mname, mod in model.named_modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            names.extend(f"{mname}.{n}" for n in ("weight", "bias", "running_mean", "running_var"))
    return names


@contextlib.contextmanager
def cumulative_bn(model: torch.nn.Module):
    """BN running statistics reset and re-estimated as a plain average over the batches
    seen inside the block (``momentum=None``); momentum 0.1 again afterwards."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for mod in bns:
        mod.reset_running_stats()
        mod.momentum = None
    try:
        yield bns
    finally:
        for mod in bns:
            mod.momentum = 0.1


def adapt_bn(model: torch.nn.Module, data, *, steps: int, batch_size: int, lr: float, seed: int) -> float:
    """FedTiny adaptive-BN step on one candidate: reset BN statistics, then ``steps`` SGD
    steps on the BN affine parameters only (other weights frozen) in train mode, which
    also re-estimates the running statistics. Returns the mean loss."""
    model.train()
    params = bn_parameters(model)
    opt = torch.optim.SGD(params, lr=lr) if params else None
    losses = []
    step = 0
    with cumulative_bn(model):
        while step < max(steps, 1):
            for idx in batches(len(data), batch_size, seed + step):
                loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
                if opt is not None and steps > 0:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                losses.append(float(loss.detach()))
                step += 1
                if step >= max(steps, 1):
                    break
    return sum(losses) / max(len(losses), 1)


def bn_stat_names(model: torch.nn.Module) -> list[str]:
    """``<bn>.running_mean`` / ``<bn>.running_var`` of every BN layer."""
    return [k for k in bn_state_names(model) if k.endswith(("running_mean", "running_var"))]


@torch.no_grad()
def bn_statistics(model: torch.nn.Module, data, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """BN running statistics of ``model`` re-estimated on ``data`` (forward passes only,
    train-mode BN, plain average of the per-batch mean and unbiased variance, as
    :func:`torch.optim.swa_utils.update_bn`). Weights and BN affine are untouched."""
    model.train()
    with cumulative_bn(model):
        for i in range(0, len(data), batch_size):
            model(data.x[i:i + batch_size])
    sd = model.state_dict()
    return {k: sd[k].detach().clone() for k in bn_stat_names(model)}


def pool_bn_statistics(parts: list[tuple[float, Mapping[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """Pool per-client BN statistics into those of the union of their data:
    mu = sum_i n_i mu_i / N, var = sum_i n_i (var_i + mu_i^2) / N - mu^2 (clamped at 0),
    so the spread of the clients' means counts towards the variance (a plain mean of
    the clients' variances would miss it under non-IID data)."""
    total = sum(n for n, _ in parts)
    out = {}
    for k in parts[0][1]:
        if k.endswith("running_mean"):
            out[k] = sum(n * s[k] for n, s in parts) / total
    for k in parts[0][1]:
        if k.endswith("running_var"):
            mk = k[: -len("var")] + "mean"
            second = sum(n * (s[k] + s[mk] ** 2) for n, s in parts) / total
            out[k] = (second - out[mk] ** 2).clamp_min(0.0)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, batch_size: int = 500) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in eval mode."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(data), batch_size):
        x, y = data.x[i:i + batch_size], data.y[i:i + batch_size]
        out = model(x)
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
    n = max(len(data), 1)
    return loss / n, correct / n


# HideNseek sign supermask -------------------------------------------------------------------
class _SignSTE(torch.autograd.Function):
    """sign(s) in {-1, +1} forward, straight-through (identity) gradient."""

    @staticmethod
    def forward(ctx, s):
        return torch.where(s >= 0, torch.ones_like(s), -torch.ones_like(s))

    @staticmethod
    def backward(ctx, g):
        return g


def frozen_weights(weights: Mapping[str, torch.Tensor], mask: Mask, scale: str = "density") -> dict[str, torch.Tensor]:
    """HideNseek's frozen weights w0 = m * w_init / sqrt(d_l) (flat tensors), d_l = kept fraction of layer l.

    The paper keeps the unpruned initial weights (Vallapuram et al., arXiv 2206.04385);
    the 1/sqrt(d_l) factor is the supermask literature's "scaled" initialisation
    (Ramanujan et al., edge-popup, arXiv 1911.13299): a unit keeps only a
    d_l share of its fan-in, so E[(sum_j w_j x_j)^2] shrinks by d_l, and the factor
    restores the dense layer's pre-activation variance. Signs cannot change magnitudes,
    so without it the BN-free fc layers of :class:`~.models.SmallCNN` (fc1 keeps ~7 % of
    its weights at 90 % SynFlow sparsity) start, and stay, with near-flat logits. The
    paper does not state a scale (deviation: ours); ``scale="none"`` keeps the unscaled
    initial weights. Measured effect: package README, "HideNseek accuracy".
    """
    if scale not in ("density", "none"):
        raise ValueError(f"scale must be 'density' or 'none', got {scale!r}")
    out = {}
    for k, m in mask.groups.items():
        w = weights[k].detach().flatten().float() * m.float()
        kept = float(m.float().mean())
        out[k] = w / math.sqrt(kept) if (scale == "density" and kept > 0) else w
    return out


def signed_weights(base: Mapping[str, torch.Tensor], mask: Mask, scores: Mapping[str, torch.Tensor]) -> dict:
    """w_eff = m * sign(s) * w0 per prunable tensor."""
    out = {}
    for k, w0 in base.items():
        m = mask[k].view_as(w0).to(w0.dtype)
        out[k] = m * _SignSTE.apply(scores[k]) * w0
    return out


def train_signs(model: torch.nn.Module, base: Mapping[str, torch.Tensor], mask: Mask,
                scores: dict[str, torch.Tensor], data, *, epochs: int, batch_size: int, lr: float,
                score_lr: float, momentum: float, seed: int) -> LocalResult:
    """HideNseek client step: weights frozen, learn real scores s (effective weight
    m * sign(s) * w0, straight-through sign), plus the dense biases and BN affine
    parameters. ``scores`` is updated in place (float tensors shaped like the weights)."""
    from torch.func import functional_call

    model.train()
    for k in base:
        dict(model.named_parameters())[k].requires_grad_(False)
    score_params = {k: torch.nn.Parameter(s.clone()) for k, s in scores.items()}
    others = [p for n, p in model.named_parameters() if n not in base]
    opt = torch.optim.SGD([{"params": list(score_params.values()), "lr": score_lr},
                           {"params": others, "lr": lr}], lr=lr, momentum=momentum)
    res = sgd_epochs(model, data, opt,
                     lambda x, y: F.cross_entropy(functional_call(model, signed_weights(base, mask, score_params), (x,)), y),
                     epochs=epochs, batch_size=batch_size, seed=seed)
    for k, p in score_params.items():
        scores[k] = p.detach()
    return res


def abstentions(start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HideNseek 2-bit vote (ours, ``vote="abstain"``): where a node abstains.

    ``start`` are the node's scores at the beginning of the round (global sign times the
    node's own magnitude), ``end`` after local training. Per kept weight the node votes
    *flip* if sign(end) != sign(start), *keep* if |end| >= |start| with the same sign (its
    data reinforced the global sign), and *abstains* if the score shrank towards zero
    without crossing it (its data pushed against the global sign, not far enough to
    flip). A plain majority vote counts that last case as *keep*, so nodes whose data is
    indifferent to a weight block flips that the nodes that care about it agree on."""
    return {k: (torch.sign(end[k]) == torch.sign(start[k])) & (end[k].abs() < start[k].abs()) for k in start}


def model_bytes(shapes: Mapping[str, tuple[int, ...]], mask: Mask | None, dense_numel: int) -> int:
    """Storage of the client's model in sparse form: kept float32 values + 1-bit masks + dense rest."""
    if mask is None:
        return 4 * (sum(math.prod(s) for s in shapes.values()) + dense_numel)
    kept = mask.total_kept
    bits = sum((math.prod(s) + 7) // 8 for s in shapes.values())
    return 4 * (kept + dense_numel) + bits
