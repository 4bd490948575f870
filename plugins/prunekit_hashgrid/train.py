"""Standalone trainer for a small hash-grid NeRF (CPU by default, CUDA with ``device="cuda"``): dense,
HollowNeRF, or occupancy-grid culled.

Loss = mean |C(r) - C_gt(r)|^2 over a random batch of training rays, plus, for HollowNeRF, the saliency
budget penalty lam*(d - C) + rho/2*(d - C)^2 (``saliency.SaliencyBudget``) from ``budget_start`` on.
Adam (eps 1e-15, as Instant-NGP). HollowNeRF gates are straight-through hard gates throughout; every
sample is evaluated (so a pruned cell still gets the gradient that can reopen it) until ``freeze_from`` *
steps, after which the saliency grid is frozen and samples in pruned cells are skipped (exact: their
density is 0 in the forward pass), which is how the model renders after compaction.
``dilate`` > 0 (ours, not the paper's) grows the frozen mask by that many cells (:func:`dilate_mask`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field as dc_field
from typing import Literal

import torch

from .data import Views
from .field import HollowField
from .occupancy import OccupancyGrid
from .render import render_image, render_rays


@dataclass
class TrainConfig:
    mode: Literal["dense", "hollow", "occgrid"] = "hollow"
    steps: int = 1000
    batch_rays: int = 1024
    samples: int = 48
    lr: float = 1e-2
    saliency_lr: float = 5e-2  # GlobalAdam (saliency.GlobalAdam) on the logits
    grid: dict = dc_field(default_factory=lambda: dict(num_levels=8, min_res=16, max_res=256, log2_hashmap_size=14,
                                                       features_per_level=2))
    hidden: int = 64
    saliency_res: int = 32
    saliency_target: float = 0.1  # C: fraction of saliency cells kept
    rho: float = 20.0
    eta: float = 0.01
    budget_start: float = 0.1  # fraction of steps: the saliency target ramps from 1 here ...
    budget_end: float = 0.6  # ... to saliency_target here (cubic schedule)
    freeze_from: float = 0.8  # fraction of steps
    dilate: int = 0  # ours: at the freeze, also keep cells within this many cells of a kept one
    init_logit: float = 0.5
    occ_res: int = 64
    background: tuple[float, float, float] | None = (1.0, 1.0, 1.0)  # None: learned
    seed: int = 0
    threads: int = 0  # 0: leave torch's setting
    device: str = "cpu"  # "cuda": model, rays, samples, saliency and occupancy grids on the GPU

    def __post_init__(self) -> None:
        if self.mode not in ("dense", "hollow", "occgrid"):
            raise ValueError(f"mode must be dense, hollow or occgrid, got {self.mode!r}")
        if self.steps < 1 or self.batch_rays < 1 or self.samples < 1:
            raise ValueError("steps, batch_rays and samples must be >= 1")
        if self.dilate < 0:
            raise ValueError(f"dilate must be >= 0 cells, got {self.dilate}")
        resolve_device(self.device)


def resolve_device(name: str) -> torch.device:
    """``"cpu"`` or ``"cuda"[:i]`` as a torch device; :class:`prunekit.UsageError` when CUDA is asked for and absent."""
    from prunekit import UsageError

    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"device must be 'cpu' or 'cuda', got {name!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"device must be 'cpu' or 'cuda', got {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but torch {torch.__version__} sees no CUDA device "
                         f"(built with CUDA {torch.version.cuda or 'none'})")
    return dev


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings are real (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Trained:
    field: HollowField
    occupancy: OccupancyGrid | None
    config: TrainConfig
    log: dict

    def keep_fn(self):
        """The sample-skipping predicate at render time (None: evaluate every sample)."""
        if self.occupancy is not None:
            return self.occupancy.keep
        if self.field.saliency is not None:
            return self.field.saliency.keep_fn()
        return None


def enforce_budget(saliency, target: float) -> int:
    """Freeze-time projection onto the budget (ADMM's z-step): if more than ``target`` of the cells are kept,
    keep only the top ones by logit (core :func:`prunekit.select`); returns the number of cells cut."""
    from prunekit import Budget, Scores, select

    kept = saliency.kept()
    top = select(Scores.single(saliency.logits.detach().cpu()), Budget(keep_ratio=target)).only.to(kept.device)
    cut = kept & ~top
    with torch.no_grad():
        saliency.logits[cut] = -1e-3  # just below the threshold: the gate reads 0
    return int(cut.sum())


def dilate_mask(saliency, radius: int) -> int:
    """Our margin (not in the paper): after the budget projection, reopen the cells within ``radius`` of a
    kept cell (:func:`saliency.dilate_cells`), so weakly supervised neighbours of the surface (grazing views)
    are not cut; the kept fraction then exceeds C. Returns the number of cells reopened."""
    from .saliency import dilate_cells

    kept = saliency.kept()
    add = dilate_cells(kept, saliency.res, radius) & ~kept
    with torch.no_grad():
        saliency.logits[add] = 1e-3  # just above the threshold: the gate reads 1
    return int(add.sum())


def build_field(cfg: TrainConfig) -> HollowField:
    return HollowField(cfg.grid, cfg.saliency_res if cfg.mode == "hollow" else 0, cfg.hidden,
                       init_logit=cfg.init_logit, background=cfg.background)


def train(views: Views, cfg: TrainConfig, progress=None) -> Trained:
    """Train on ``views``; ``progress(step, loss)`` is called every 50 steps if given."""
    from .saliency import GlobalAdam, SaliencyBudget

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    g = torch.Generator(device=dev).manual_seed(cfg.seed)
    fld = build_field(cfg).to(dev)  # built on the CPU first: the same initial weights on every device
    groups = [{"params": [fld.encoding.hash_table], "lr": cfg.lr},
              {"params": [*fld.density_mlp.parameters(), *fld.color_mlp.parameters()], "lr": cfg.lr}]
    if fld.learn_background:
        groups.append({"params": [fld.background], "lr": cfg.lr})
    opt = torch.optim.Adam(groups, eps=1e-15)
    sal_opt = GlobalAdam([fld.saliency.logits], lr=cfg.saliency_lr) if fld.saliency is not None else None
    budget = None
    if fld.saliency is not None:
        budget = SaliencyBudget(cfg.saliency_target, int(cfg.budget_start * cfg.steps), int(cfg.budget_end * cfg.steps),
                                cfg.rho, cfg.eta)
    occ = OccupancyGrid(cfg.occ_res, warmup=min(256, cfg.steps // 4), device=dev) if cfg.mode == "occgrid" else None
    step_size = math.sqrt(3) / cfg.samples
    rgb = views.images.reshape(-1, 3).to(dev)
    ro, rd = views.rays_o.reshape(-1, 3).to(dev), views.rays_d.reshape(-1, 3).to(dev)
    freeze_from = int(cfg.freeze_from * cfg.steps) if fld.saliency is not None else cfg.steps + 1
    log = {"loss": [], "density": [], "lam": [], "evaluated_fraction": []}
    sync(dev)
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        idx = torch.randint(0, rgb.shape[0], (cfg.batch_rays,), generator=g, device=dev)
        frozen = step >= freeze_from
        keep = None
        if occ is not None:
            occ.update(step, lambda x: fld.density(x), step_size, g)
            keep = occ.keep
        elif frozen:
            if fld.saliency.logits.requires_grad:
                fld.saliency.logits.requires_grad_(False)
                enforce_budget(fld.saliency, cfg.saliency_target)
                if cfg.dilate:
                    dilate_mask(fld.saliency, cfg.dilate)
            keep = fld.saliency.keep_fn()
        out = render_rays(fld, ro[idx], rd[idx], cfg.samples, perturb=True, hard=True, keep=keep, generator=g)
        loss = torch.mean((out.rgb - rgb[idx]) ** 2)
        total = loss
        if budget is not None and not frozen:
            total = total + budget.penalty(fld.saliency, step)
        opt.zero_grad(set_to_none=True)
        if sal_opt is not None:
            sal_opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if sal_opt is not None and not frozen:
            sal_opt.step()
        if budget is not None and not frozen:
            budget.update(fld.saliency, step)
        if step % 50 == 0 or step == cfg.steps - 1:
            log["loss"].append((step, float(loss.detach())))
            log["evaluated_fraction"].append((step, out.evaluated / max(1, out.samples)))
            if fld.saliency is not None:
                log["density"].append((step, float(fld.saliency.density().detach())))
                log["lam"].append((step, budget.enforcer.lam))
            if progress is not None:
                progress(step, float(loss.detach()))
    sync(dev)
    log["train_seconds"] = time.perf_counter() - t0
    if fld.saliency is not None:
        log["kept_cells"] = int(fld.saliency.kept().sum())
        log["kept_cell_fraction"] = float(fld.saliency.kept().float().mean())
    if occ is not None:
        log["occupied_fraction"] = occ.occupied_fraction()
    return Trained(fld, occ, cfg, log)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a.clamp(0, 1) - b) ** 2))
    return -10.0 * math.log10(max(mse, 1e-12))


def evaluate(fld, views: Views, samples: int, keep=None) -> dict:
    """Mean PSNR over ``views``, render seconds and field queries (hard gates, no perturbation), on the
    field's device (views are moved there one at a time; the time is synchronised on CUDA)."""
    dev = next(fld.parameters()).device
    sync(dev)
    ps, n, total, t0 = [], 0, 0, time.perf_counter()
    for i in range(len(views)):
        img, k, m = render_image(fld, views.rays_o[i].to(dev), views.rays_d[i].to(dev), samples, hard=True, keep=keep)
        ps.append(psnr(img, views.images[i].to(dev)))
        n, total = n + k, total + m
    sync(dev)
    return {"psnr": sum(ps) / len(ps), "psnr_per_view": ps, "render_seconds": time.perf_counter() - t0,
            "field_queries": n, "samples": total}


def config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)
