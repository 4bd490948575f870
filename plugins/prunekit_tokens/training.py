"""Training loops for Cropr auxiliary heads (frozen backbone or jointly) and evaluation.

Loss (Token Cropr, Sec. 3.2): ``L = L_main + w * sum_i L_aux_i`` where each auxiliary
head is trained on the main task's target. In ``frozen`` mode the backbone's parameters
do not train and ``L_main`` is dropped (it would send no gradient to the Cropr
modules: their inputs are detached and selection is not differentiated).
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

import torch
from torch import nn

from .attach import CroprReducer, TokenReducer
from .tasks import confusion, iou_from_confusion


def batches(x, y, batch_size: int, shuffle: bool = False, seed: int = 0, normalise=None):
    """Yield (inputs, targets) torch batches from numpy/tensor arrays."""
    n = len(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size].numpy()
        xb = torch.as_tensor(x[idx])
        if normalise is not None:
            xb = normalise(xb)
        yield xb, torch.as_tensor(y[idx])


def train_epoch(forward: Callable, params: list[nn.Parameter], data: Iterable, task, optimizer,
                reducer: TokenReducer | None = None, mode: str = "frozen", aux_weight: float = 1.0,
                log_every: int = 0, clip_norm: float | None = 1.0) -> dict:
    """One pass over ``data``; returns mean losses and wall time."""
    if mode not in ("frozen", "joint", "backbone"):
        raise ValueError(f"mode must be frozen, joint or backbone, got {mode!r}")
    t0, n, tot_main, tot_aux = time.perf_counter(), 0, 0.0, 0.0
    for step, (xb, yb) in enumerate(data):
        out = forward(xb)
        loss = torch.zeros(())
        if mode in ("joint", "backbone"):
            main = task.loss(out, yb)
            loss = loss + main
            tot_main += main.item()
        if isinstance(reducer, CroprReducer) and reducer.has_aux_heads and mode != "backbone":
            aux = reducer.aux_loss(task.aux_loss, yb)
            loss = loss + aux_weight * aux
            tot_aux += aux.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        optimizer.step()
        n += 1
        if log_every and step % log_every == 0:
            print(f"  step {step}: main {tot_main / n:.4f} aux {tot_aux / n:.4f}", flush=True)
    return {"main_loss": tot_main / max(n, 1), "aux_loss": tot_aux / max(n, 1), "seconds": time.perf_counter() - t0}


@torch.inference_mode()
def evaluate_classification(forward: Callable, data: Iterable) -> float:
    correct = total = 0
    for xb, yb in data:
        correct += int((forward(xb).argmax(-1) == yb).sum())
        total += len(yb)
    return correct / max(total, 1)


@torch.inference_mode()
def evaluate_mask(forward: Callable, data: Iterable, num_classes: int) -> dict:
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for xb, yb in data:
        conf += confusion(forward(xb).argmax(1), yb, num_classes)
    iou = iou_from_confusion(conf)
    return {"miou": float(iou.mean()), "iou": [float(v) for v in iou]}
