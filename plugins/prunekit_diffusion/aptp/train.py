"""APTP router training (the pruning phase: the UNet is frozen, only the router learns).

Per step, for a batch of (image x0, text conditioning c, prompt embedding e):

    x_t = add_noise(x0, eps, t);  gates = router(e)   (Sinkhorn-assigned code per prompt)
    L = w(t) * ||eps_gated(x_t, t, c) - eps||^2                      min-SNR weight w = min(SNR, 5) / SNR
      + w_R * |log(mean MAC ratio / p)|                              resource
      + w_C * BCE(softmax(A A^T / 0.03), softmax(E E^T / 0.03))      contrastive (arch vs prompt)
      + w_D * ||eps_gated - eps_full||^2                             distillation to the all-gates-on UNet
      + w_A * CE(softmax(S / 0.1), Sinkhorn plan)                    predictor -> its code (our addition)
      + w_S * (-std(code ratios)) + w_M * (1 - max(code ratios))     code diversity (paper's L_std, L_max)

The first ``warmup`` fraction of steps runs without the quantiser (the predictor's own gates).
:func:`step_losses` computes every term of one step (also used by ``scripts/bench/diag_aptp_alloc.py``).
With ``assign_codes=False`` the assignment term trains the predictor only (the codes are detached in it).

``paper_losses=True`` follows the reference code (rezashkv/diffusion_pruning, ``pdm/training/trainer.py``) on
two points: there is no assignment term (after warm-up the predictor learns from the contrastive loss only, the
code index comes from the no-grad Sinkhorn plan, and the codes get no assignment pull), and the spread terms
are over the per-SAMPLE MAC ratios ``r_i`` of the batch, warm-up included:
``L_std = -std_i(r_i)``, ``L_max = 1 - max_i(r_i)``. The reference's third difference (resource ratio over
the prunable MACs only) is not taken. With one code (the static baseline) the flag changes nothing: the
assignment term is then identically 0 with zero gradient, and the spread terms stay off as in the default.
Paper weights (METHODS.md 6.2): 2 R, 100 contrastive, 0.2 distill, 0.1 std, 0.1 max; the per-block
activation loss (0.2 L_block) is not implemented. Defaults here are scaled for tiny models and few steps
and are documented in :class:`AptpConfig`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .gating import MacModel, discover, gated_macs, install
from .router import AptpRouter, assignment_loss, contrastive_loss, resource_loss


@dataclass
class AptpConfig:
    n_codes: int = 4
    keep_macs: float = 0.6  # p: target mean fraction of the UNet's MACs
    steps: int = 300
    batch: int = 32
    lr: float = 5e-2  # router (codes + predictor); the paper's 2e-4 is for 5000 steps on SD
    lr_warmup: int = 0  # linear LR warm-up steps, lr * min(1, step / lr_warmup) (the reference: 100); 0: constant
    warmup: float = 0.1  # fraction of steps without the quantiser
    w_resource: float = 2.0
    w_contrastive: float = 1.0  # the paper: 100 (its predictor sees no assignment term; see the package README)
    w_distill: float = 0.2
    w_assign: float = 1.0
    assign_codes: bool = True  # False: the assignment loss trains the predictor only (codes detached in it)
    paper_losses: bool = False  # True: the reference code's terms (no assignment; L_std/L_max per sample), see module
    w_std: float = 0.1
    w_max: float = 0.1
    snr_gamma: float = 5.0
    temperature: float = 0.4
    offset: float = 3.0
    ff_chunks: int = 32
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 100


def min_snr_weight(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    abar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = abar / (1 - abar)
    return torch.clamp(snr, max=gamma) / snr


def lr_factor(step: int, warmup: int) -> float:
    """LR multiplier at ``step``: ``min(1, step / warmup)``, constant 1 without warm-up (the reference's
    ``constant_with_warmup`` schedule, 100 steps)."""
    return min(1.0, step / warmup) if warmup > 0 else 1.0


def spread_terms(ratios: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's diversity terms ``(L_std, L_max) = (-std(r), 1 - max(r))`` over MAC ratios ``r``.

    Default recipe: ``r`` = the K code ratios after warm-up; ``paper_losses``: the per-sample ratios of the
    batch (reference code, rezashkv/diffusion_pruning ``pdm/training/trainer.py``). ``std`` is unbiased.
    """
    return -ratios.std(), 1 - ratios.max()


def step_losses(router: AptpRouter, unet: torch.nn.Module, ctl, macs: MacModel, noise_scheduler,
                b: dict[str, torch.Tensor], config: AptpConfig, quantise: bool = True,
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One router-training step's loss terms (the module formula) on batch ``b``.

    Returns ``(terms, routing)``: ``terms`` holds the unweighted ``ddpm``, ``resource``, ``contrastive``,
    ``distill`` and, with the quantiser, ``assign``, ``std`` (= -std of the code ratios) and ``max``
    (= 1 - max) (``paper_losses``: no ``assign``; ``std`` / ``max`` over the per-sample ratios, every step), plus the per-sample ``ddpm_each`` / ``distill_each``, ``mac_ratios`` and the weighted
    total ``loss``; ``routing`` is the router's output (``gates``, ``index``, ``plan``, ...).
    """
    x0, cond, emb = b["images"], b["encoder_hidden_states"], b["prompt_emb"]
    noise = torch.randn_like(x0)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],))
    xt = noise_scheduler.add_noise(x0, noise, t)
    ctl.clear()
    with torch.no_grad():
        full = unet(xt, t, cond).sample
    r = router(emb, quantise=quantise)
    ctl.set(r["gates"])
    try:
        pred = unet(xt, t, cond).sample
    finally:
        ctl.clear()
    w = min_snr_weight(noise_scheduler, t, config.snr_gamma)
    ddpm_each = w * (pred - noise).pow(2).mean(dim=(1, 2, 3))
    distill_each = (pred - full).pow(2).mean(dim=(1, 2, 3))
    ratios = macs.ratio(r["gates"])
    terms = {"ddpm": ddpm_each.mean(), "resource": resource_loss(ratios, config.keep_macs),
             "contrastive": contrastive_loss(router.match_vectors(r["bits"]), emb), "distill": distill_each.mean(),
             "ddpm_each": ddpm_each, "distill_each": distill_each, "mac_ratios": ratios}
    loss = terms["ddpm"] + config.w_resource * terms["resource"] + config.w_contrastive * terms["contrastive"] \
        + config.w_distill * terms["distill"]
    if config.paper_losses:
        if config.n_codes > 1:  # one code: off, as in the default recipe (the static path is unchanged)
            terms["std"], terms["max"] = spread_terms(ratios)
            loss = loss + config.w_std * terms["std"] + config.w_max * terms["max"]
    elif r["plan"] is not None:
        sims = r["sims"] if config.assign_codes else \
            router.match_vectors(r["bits"]) @ router.match_vectors(r["code_bits"].detach()).T
        terms["assign"] = assignment_loss(sims, r["plan"])
        loss = loss + config.w_assign * terms["assign"]
        if config.n_codes > 1:  # the spread terms are undefined (std) or moot for one code
            code_ratios = macs.ratio(r["code_bits"])
            terms["std"], terms["max"] = spread_terms(code_ratios)
            loss = loss + config.w_std * terms["std"] + config.w_max * terms["max"]
    terms["loss"] = loss
    return terms, r


def train_router(unet: torch.nn.Module, noise_scheduler, batches: Callable[[int], dict[str, torch.Tensor]],
                 config: AptpConfig, checkpoint: Path | None = None, progress: Callable[[dict], None] | None = None,
                 ) -> tuple[AptpRouter, MacModel, list[dict[str, Any]]]:
    """Train an :class:`AptpRouter` on a frozen ``unet``.

    ``batches(step)`` returns ``{"images", "encoder_hidden_states", "prompt_emb"}``. With ``checkpoint``
    the router is saved there every ``checkpoint_every`` steps and at the end (atomic writes).
    """
    from .bundle import save_router

    torch.manual_seed(config.seed)
    unet.eval().requires_grad_(False)
    layout = discover(unet, config.ff_chunks)
    probe = batches(-1)
    macs = gated_macs(unet, layout, probe["images"][:1], torch.zeros(1, dtype=torch.long),
                      probe["encoder_hidden_states"][:1])
    router = AptpRouter(layout, probe["prompt_emb"].shape[-1], config.n_codes, config.temperature, config.offset)
    opt = torch.optim.Adam(router.parameters(), config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, config.lr_warmup))
    ctl = install(unet, layout)
    log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    try:
        for step in range(config.steps):
            router.train()
            terms, r = step_losses(router, unet, ctl, macs, noise_scheduler, batches(step), config,
                                   quantise=step >= config.warmup * config.steps)
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
            sched.step()
            if step % config.log_every == 0 or step == config.steps - 1:
                counts = torch.bincount(r["index"], minlength=config.n_codes).tolist()
                rec = {"step": step, **{k: terms[k].item() for k in ("loss", "ddpm", "resource", "contrastive", "distill")},
                       "mac_ratio": terms["mac_ratios"].mean().item(),
                       "codes": counts, "seconds": round(time.perf_counter() - t0, 1)}
                log.append(rec)
                if progress:
                    progress(rec)
            if checkpoint is not None and ((step + 1) % config.checkpoint_every == 0 or step == config.steps - 1):
                save_router(checkpoint, router, macs, {"config": asdict(config), "step": step + 1, "log": log})
    finally:
        ctl.remove()
    router.eval()
    return router, macs, log
