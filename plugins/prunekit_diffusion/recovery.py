"""Short recovery fine-tune of a pruned denoiser against the unpruned one.

LD-Pruner fine-tunes the pruned model with its surviving weights after removal. Here
the loss is the usual noise-prediction loss plus output distillation towards the
unpruned teacher on the same noisy input (knowledge distillation at the output, as in
BK-SDM-style recovery; the paper's exact recipe is not reproduced):

    L = w · || eps_s(x_t, t, c) - eps ||² + alpha · || eps_s(x_t, t, c) - eps_T(x_t, t, c) ||²

``w = task_weight`` (default 1): ``w = 1, alpha = 0`` is plain denoising fine-tuning, ``w = 0,
alpha = 1`` pure output distillation (the teacher's prediction is the only target), the default
``w = alpha = 1`` both (:data:`RECOVERY_MODES`).

``data`` is clean training samples ``(N, C, H, W)``; ``cond`` holds per-row
conditioning (e.g. ``{"class_labels": labels}``); the training noise schedule is the
scheduler's (e.g. ``DDPMScheduler``; a DDIM scheduler's ``add_noise`` is the same).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from .sampling import denoise

#: recovery recipes by name: (task_weight, alpha)
RECOVERY_MODES = {"mixed": (1.0, 1.0), "distill": (0.0, 1.0), "denoise": (1.0, 0.0)}


@contextmanager
def no_label_dropout(model: torch.nn.Module) -> Iterator[None]:
    """Switch off diffusers' train-mode class-label dropout (``LabelEmbedding.dropout_prob``) inside the block.

    diffusers' DiT gives every transformer block its own ``LabelEmbedding``, each dropping labels
    to the null class independently (p = 0.1) in train mode, so one sample's blocks disagree about
    its class. Distillation must condition the student like the (eval-mode) teacher, and a trainer
    that wants classifier-free-guidance dropout should drop a label once per sample itself.
    """
    saved = [(m, m.dropout_prob) for m in model.modules() if type(m).__name__ == "LabelEmbedding"]
    for m, _ in saved:
        m.dropout_prob = 0.0
    try:
        yield
    finally:
        for m, p in saved:
            m.dropout_prob = p


def distill_finetune(student: torch.nn.Module, teacher: torch.nn.Module, scheduler, data: torch.Tensor,
                     cond: dict[str, torch.Tensor] | None = None, *, steps: int = 200, batch_size: int = 32,
                     lr: float = 2e-4, alpha: float = 1.0, seed: int = 0, log_every: int = 50,
                     task_weight: float = 1.0) -> list[dict[str, Any]]:
    """Fine-tune ``student`` in place; returns a loss log. ``teacher`` is only evaluated.

    The student trains without label dropout (:func:`no_label_dropout`): it is taught the
    teacher's conditional outputs.
    """
    with no_label_dropout(student):
        return _finetune(student, teacher, scheduler, data, cond or {}, steps, batch_size, lr, alpha, seed, log_every,
                         task_weight)


def _finetune(student, teacher, scheduler, data, cond, steps, batch_size, lr, alpha, seed, log_every, task_weight):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr, weight_decay=0.0)
    teacher.eval()
    student.train()
    n_train = int(scheduler.config.num_train_timesteps)
    log, t0 = [], time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=g)
        x0 = data[idx]
        kw = {k: v[idx] for k, v in cond.items()}
        noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        t = torch.randint(0, n_train, (batch_size,), generator=g)
        xt = scheduler.add_noise(x0, noise, t)
        with torch.no_grad():
            target_t = denoise(teacher, xt, t, kw)
        pred = denoise(student, xt, t, kw)
        task, kd = F.mse_loss(pred, noise), F.mse_loss(pred, target_t)
        loss = task_weight * task + alpha * kd
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            log.append({"step": step, "task": task.item(), "distill": kd.item(), "seconds": time.perf_counter() - t0})
    student.eval()
    return log
