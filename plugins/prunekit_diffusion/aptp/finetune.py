"""APTP fine-tuning phase: train the *shared* UNet with each sample's routed code, then export.

In APTP (Ganjdanesh et al., ICLR 2025, arXiv 2406.12042; METHODS.md 6.2) every expert is a
sub-network (code) of one shared denoiser. After the router is trained, the fine-tuning phase keeps
the router fixed and trains the shared weights ``W`` with each prompt's hard code mask applied:

    c_i = router(e_i)                                (inference routing: cosine argmax, hard 0/1 gates)
    L = ||eps_W(x_t, t, y | m_{c_i}) - eps||^2 + alpha * ||eps_W(x_t, t, y | m_{c_i}) - eps_T(x_t, t, y)||^2

(``eps_T`` = the unpruned teacher; the loss, optimiser, batches and noise are those of
:func:`~prunekit_diffusion.recovery.distill_finetune`). One optimiser, and every step updates every
unit that is open in any sampled code, so units shared by several codes learn from all their
prompts; a unit closed in a sample's code gets no gradient from it (its output is multiplied by 0).
The experts are then sliced from the fine-tuned ``W`` (:func:`experts_from`); in eval each equals
the gated shared model under its code (tested). With one code this is exactly fine-tuning the
sliced static model (tested).

Approximation: the paper fine-tunes with its full loss (denoising + distillation + per-block
activation distillation) on the routed prompts; here the block-activation term is omitted.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .gating import GateLayout, install
from .router import AptpRouter
from .slicing import slice_expert


def hard_code_gates(router: AptpRouter) -> torch.Tensor:
    """The eval-mode 0/1 gates of every code, ``(E, dim)`` (exact 0.0 / 1.0 values)."""
    was = router.training
    with torch.no_grad():
        gates = (router.eval().code_gates() > 0.5).float()
    router.train(was)
    return gates


class RoutedGatedUNet(nn.Module):
    """The shared UNet with per-sample code masks: ``forward(sample, timestep, encoder_hidden_states, code)``.

    ``code`` holds one code index per sample; the gate hooks are set for the call only.
    Call :meth:`remove` to take the hooks off the UNet.
    """

    def __init__(self, unet: nn.Module, layout: GateLayout, code_gates: torch.Tensor):
        super().__init__()
        self.unet = unet
        self.register_buffer("code_gates", code_gates.detach().clone(), persistent=False)
        self._ctl = install(unet, layout)

    def forward(self, sample, timestep, encoder_hidden_states=None, code=None, return_dict=False, **kwargs):
        if code is None:
            raise ValueError("RoutedGatedUNet needs one code index per sample")
        self._ctl.set(self.code_gates[code])
        try:
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=return_dict, **kwargs)
        finally:
            self._ctl.clear()

    def remove(self) -> None:
        self._ctl.remove()


class _Unrouted(nn.Module):
    """The teacher under the student's call: drops the ``code`` argument."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, sample, timestep, code=None, **kwargs):
        return self.model(sample, timestep, **kwargs)


def finetune_shared(unet: nn.Module, router: AptpRouter, teacher: nn.Module, scheduler, data: torch.Tensor,
                    cond: dict[str, torch.Tensor], prompt_emb: torch.Tensor, **kwargs: Any) -> list[dict[str, Any]]:
    """Fine-tune ``unet`` (the shared weights, in place) with each row's routed code mask applied.

    ``data`` (N, C, H, W), ``cond`` per-row UNet conditioning, ``prompt_emb`` (N, D) the router's
    input; ``kwargs`` go to :func:`~prunekit_diffusion.recovery.distill_finetune` (steps, batch_size,
    lr, alpha, seed, log_every). Returns its loss log.
    """
    from ..recovery import distill_finetune

    if prompt_emb.shape[0] != data.shape[0]:
        raise ValueError(f"{prompt_emb.shape[0]} prompt embeddings for {data.shape[0]} training rows")
    codes = router.route(prompt_emb)
    student = RoutedGatedUNet(unet.requires_grad_(True), router.layout, hard_code_gates(router))
    try:
        log = distill_finetune(student, _Unrouted(teacher), scheduler, data, {**cond, "code": codes}, **kwargs)
    finally:
        student.remove()
    unet.eval()
    return log


def experts_from(router: AptpRouter, unet: nn.Module) -> list[nn.Module]:
    """Every code sliced out of ``unet`` (no gate hooks on it), in eval mode."""
    gates = hard_code_gates(router)
    return [slice_expert(unet, router.layout, g)[0].eval() for g in gates]
