"""A small 3D Gaussian Splatting trainer (3DGS, Kerbl et al. 2023) for benchmark scenes.

Runs on CPU with this package's reference renderer (gsplat's ``rasterization`` when CUDA and
gsplat are present: ``render(..., backend="auto")``). It is written in the shape of gsplat's
``examples/simple_trainer.py`` so that a gsplat-style *strategy* plugs in unchanged:

- ``params``: a ``torch.nn.ParameterDict`` with keys ``means`` [N,3], ``quats`` [N,4] (wxyz),
  ``scales`` [N,3] (log), ``opacities`` [N] (logit), ``sh0`` [N,1,3], ``shN`` [N,K,3];
- ``optimizers``: one ``torch.optim.Adam`` per key (``{key: Adam([params[key]])}``);
- ``strategy``: any object with ``initialize_state() -> dict``,
  ``step_pre_backward(params, optimizers, state, step, info)`` and
  ``step_post_backward(params, optimizers, state, step, info, packed=False)``. The strategy may
  replace rows or whole parameters (and their Adam state) in place, as gsplat's strategies do.
  ``info`` holds ``width``, ``height``, ``n_cameras`` (1), ``camera`` (a :class:`Camera`),
  ``visible`` ([N] bool: Gaussians that touched the image) and ``render`` (the
  :class:`RenderResult`). gsplat's ``means2d`` with its gradient is **not** provided by the
  reference renderer, so gsplat's ``DefaultStrategy`` (which densifies by that gradient) does
  not run on CPU; ``MCMCStrategy`` below needs only the parameters.

:func:`train` is the loop: a random training view per step, loss
(1 - lambda) L1 + lambda (1 - SSIM) with lambda = 0.2, plus the MCMC regularisers
(``opacity_reg`` * mean sigma + ``scale_reg`` * mean exp(scale)); Adam with gsplat's default
per-parameter learning rates (means 1.6e-4 x scene scale decaying to 1 %, log-scales 5e-3,
quaternions 1e-3, opacity logits 5e-2, SH DC 2.5e-3, higher SH 2.5e-3 / 20). With
``TrainConfig.compensation`` (a :class:`~prunekit_splat.compensation.JointCompensation`),
SUNDAE's image-space compensation net joins at its start step: the loss is taken on
``net(render)`` and the same backward pass trains the Gaussians and the net (SUNDAE, Yang et
al., arXiv 2405.00676); :func:`save_trained` writes the scene and the net's sidecar.

:class:`MCMCStrategy` follows "3D Gaussian Splatting as Markov Chain Monte Carlo"
(Kheradmand et al., NeurIPS 2024, arXiv 2404.09591), as gsplat's ``MCMCStrategy``: every
``refine_every`` steps, *dead* Gaussians (sigma < ``min_opacity``) are relocated onto live
ones sampled with probability proportional to opacity, and the count grows by ``grow_rate``
up to ``cap_max`` the same way; a Gaussian copied into n places gets
sigma' = 1 - (1 - sigma)^(1/n) and scale' = scale * sigma / D(sigma', n) with
D = sum_{i=1..n} sum_{k=0..i-1} C(i-1, k) (-1)^k sigma'^(k+1) / sqrt(k+1) (paper eq. 9);
after each step the means get noise N(0, Sigma) * lr_means * ``noise_lr`` *
s(1 - sigma), s(x) = 1 / (1 + exp(-100 (x - 0.995))), so only nearly transparent
Gaussians wander. Approximation: lens distortion in ``transforms.json`` (k1, k2, p1, p2) is
ignored (images are used as they are).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field

import torch

from .cameras import Camera
from .compensation import JointCompensation, apply, save_compensation, sidecar_path
from .geometry import covariance
from .metrics import psnr, ssim
from .scene import SH_C0, GaussianScene

KEYS = ("means", "quats", "scales", "opacities", "sh0", "shN")
LEARNING_RATES = {"means": 1.6e-4, "scales": 5e-3, "quats": 1e-3, "opacities": 5e-2, "sh0": 2.5e-3,
                  "shN": 2.5e-3 / 20}


@dataclass
class TrainConfig:
    steps: int = 3000
    ssim_lambda: float = 0.2
    sh_degree: int = 1
    sh_degree_interval: int = 1000  # raise the active SH degree every this many steps
    opacity_reg: float = 0.01
    scale_reg: float = 0.01
    seed: int = 0
    log_every: int = 100
    time_budget_s: float | None = None  # stop early (after the step that crosses it) on a busy machine
    # run only steps [start_step, stop_step) of this schedule: a run stopped at s and resumed from
    # s (same params, optimisers and a copy of the strategy) takes the same steps as one whole run
    # (except a compensation net, which a call builds afresh at its start step: resume before it)
    start_step: int = 0
    stop_step: int | None = None
    lrs: dict[str, float] = field(default_factory=lambda: dict(LEARNING_RATES))
    compensation: JointCompensation | None = None  # SUNDAE: train the compensation net jointly (None: off)


# ---------------------------------------------------------------------------- params
def init_params(points: torch.Tensor, colors: torch.Tensor, sh_degree: int = 1, init_opacity: float = 0.5,
                init_scale: float = 0.5) -> torch.nn.ParameterDict:
    """gsplat-style initialisation: log-scale = log(init_scale x mean distance to 3 nearest points),
    identity-free random quaternions, opacity ``init_opacity``, SH DC from ``colors`` in [0, 1]."""
    from scipy.spatial import cKDTree

    n = len(points)
    d, _ = cKDTree(points.numpy()).query(points.numpy(), k=min(4, n))
    dist = torch.from_numpy(d[:, 1:].mean(1) if n > 1 else d.reshape(-1)).float().clamp_min(1e-6)
    k = (sh_degree + 1) ** 2 - 1
    return torch.nn.ParameterDict({
        "means": torch.nn.Parameter(points.float().clone()),
        "quats": torch.nn.Parameter(torch.rand(n, 4)),
        "scales": torch.nn.Parameter(torch.log(dist * init_scale)[:, None].repeat(1, 3)),
        "opacities": torch.nn.Parameter(torch.full((n,), math.log(init_opacity / (1 - init_opacity)))),
        "sh0": torch.nn.Parameter(((colors.float() - 0.5) / SH_C0)[:, None, :]),
        "shN": torch.nn.Parameter(torch.zeros(n, k, 3)),
    })


def make_optimizers(params: torch.nn.ParameterDict, scene_scale: float,
                    lrs: dict[str, float] | None = None) -> dict[str, torch.optim.Adam]:
    """One Adam per parameter, gsplat's rates; the means' rate is scaled by ``scene_scale``."""
    lrs = dict(LEARNING_RATES, **(lrs or {}))
    return {k: torch.optim.Adam([{"params": [params[k]], "lr": lrs[k] * (scene_scale if k == "means" else 1.0),
                                  "name": k}], eps=1e-15) for k in KEYS}


def params_to_scene(params, sh_degree: int | None = None) -> GaussianScene:
    """A :class:`GaussianScene` view of ``params`` (differentiable; ``sh_degree`` truncates shN)."""
    shN = params["shN"]
    if sh_degree is not None:
        shN = shN[:, : (sh_degree + 1) ** 2 - 1]
    return GaussianScene(means=params["means"], quats=params["quats"], scales=params["scales"],
                         opacities=params["opacities"], sh0=params["sh0"][:, 0], shN=shN)


def scene_to_params(scene: GaussianScene) -> torch.nn.ParameterDict:
    return torch.nn.ParameterDict({"means": scene.means, "quats": scene.quats, "scales": scene.scales,
                                   "opacities": scene.opacities, "sh0": scene.sh0[:, None, :], "shN": scene.shN})


# ---------------------------------------------------------------------------- row ops on params + Adam state
def _swap_param(params, optimizers, key: str, new: torch.Tensor, state_fn) -> None:
    """Replace ``params[key]`` by ``new`` and map each Adam state tensor with ``state_fn``."""
    old = params[key]
    p = torch.nn.Parameter(new)
    opt = optimizers[key]
    st = opt.state.pop(old, None)
    opt.param_groups[0]["params"] = [p]
    if st:
        opt.state[p] = {k: (state_fn(v) if k != "step" else v) for k, v in st.items()}
    params[key] = p


def reset_rows(params, optimizers, rows: torch.Tensor, values: dict[str, torch.Tensor] | None = None) -> None:
    """Overwrite ``rows`` of each parameter (with ``values[key]`` if given) and zero their Adam moments."""
    with torch.no_grad():
        for k in KEYS:
            if values and k in values:
                params[k][rows] = values[k]
            st = optimizers[k].state.get(params[k], {})
            for name, v in st.items():
                if name != "step":
                    v[rows] = 0


def append_rows(params, optimizers, values: dict[str, torch.Tensor]) -> None:
    """Append new Gaussians (``values[key]`` rows) with zero Adam moments."""
    for k in KEYS:
        extra = values[k].detach()
        _swap_param(params, optimizers, k, torch.cat([params[k].detach(), extra]),
                    lambda v, n=len(extra): torch.cat([v, v.new_zeros((n, *v.shape[1:]))]))


def remove_rows(params, optimizers, state: dict, mask: torch.Tensor) -> None:
    """Remove Gaussians where ``mask`` is True from params, Adam state and per-Gaussian ``state``
    tensors (like ``gsplat.strategy.ops.remove``)."""
    keep = ~mask
    for k in KEYS:
        _swap_param(params, optimizers, k, params[k].detach()[keep], lambda v: v[keep])
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.shape[:1] == mask.shape:
            state[k] = v[keep]


# ---------------------------------------------------------------------------- MCMC strategy
def relocation(opacity: torch.Tensor, log_scales: torch.Tensor, copies: torch.Tensor, n_max: int = 51):
    """Paper eq. 9: opacity and log-scale of a Gaussian split into ``copies`` identical ones."""
    n = copies.clamp(1, n_max).to(torch.float64)
    o = opacity.to(torch.float64).clamp(1e-6, 1 - 1e-6)
    new_o = 1 - (1 - o) ** (1 / n)
    denom = torch.zeros_like(o)
    for i in range(1, int(n.max()) + 1):
        active = n >= i
        for kk in range(i):
            term = math.comb(i - 1, kk) * (-1) ** kk * new_o ** (kk + 1) / math.sqrt(kk + 1)
            denom = denom + torch.where(active, term, torch.zeros_like(term))
    new_scale = log_scales + torch.log((o / denom).clamp_min(1e-12))[:, None].to(log_scales.dtype)
    return new_o.clamp(0.005, 1 - 1e-6).to(opacity.dtype), new_scale


class MCMCStrategy:
    """Relocate dead Gaussians, grow to ``cap_max``, perturb the means (see the module doc)."""

    def __init__(self, cap_max: int = 30000, noise_lr: float = 5e5, refine_start_iter: int = 200,
                 refine_stop_iter: int = 2500, refine_every: int = 50, min_opacity: float = 0.005,
                 grow_rate: float = 0.05, seed: int = 0):
        self.cap_max, self.noise_lr, self.min_opacity, self.grow_rate = cap_max, noise_lr, min_opacity, grow_rate
        self.refine_start_iter, self.refine_stop_iter, self.refine_every = refine_start_iter, refine_stop_iter, refine_every
        self.gen = torch.Generator().manual_seed(seed)

    def initialize_state(self) -> dict:
        return {"relocated": 0, "grown": 0}

    def step_pre_backward(self, params, optimizers, state, step, info) -> None:
        pass

    def step_post_backward(self, params, optimizers, state, step, info, packed=False, lr: float | None = None) -> None:
        if self.refine_start_iter <= step < self.refine_stop_iter and step % self.refine_every == 0:
            state["relocated"] += self._relocate(params, optimizers)
            state["grown"] += self._grow(params, optimizers)
        lr = optimizers["means"].param_groups[0]["lr"] if lr is None else lr
        self._inject_noise(params, lr)

    def _sample(self, params, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        o = torch.sigmoid(params["opacities"].detach())
        alive = (o > self.min_opacity).float()
        src = torch.multinomial(o * alive + 1e-12, count, replacement=True, generator=self.gen)
        copies = torch.bincount(src, minlength=len(o))
        return src, copies

    def _split_values(self, params, src: torch.Tensor, copies: torch.Tensor) -> dict[str, torch.Tensor]:
        """New opacity/scale for every sampled source (it and its copies share them)."""
        uniq = torch.unique(src)
        o = torch.sigmoid(params["opacities"].detach()[uniq])
        new_o, new_s = relocation(o, params["scales"].detach()[uniq], copies[uniq] + 1)
        return {"rows": uniq, "opacities": torch.logit(new_o), "scales": new_s}

    def _relocate(self, params, optimizers) -> int:
        dead = (torch.sigmoid(params["opacities"].detach()) <= self.min_opacity).nonzero().flatten()
        if len(dead) == 0 or len(dead) == len(params["means"]):
            return 0
        src, copies = self._sample(params, len(dead))
        upd = self._split_values(params, src, copies)
        reset_rows(params, optimizers, upd["rows"], {"opacities": upd["opacities"], "scales": upd["scales"]})
        reset_rows(params, optimizers, dead, {k: params[k].detach()[src] for k in KEYS})
        return len(dead)

    def _grow(self, params, optimizers) -> int:
        n = len(params["means"])
        add = min(self.cap_max, int(n * (1 + self.grow_rate))) - n
        if add <= 0:
            return 0
        src, copies = self._sample(params, add)
        upd = self._split_values(params, src, copies)
        reset_rows(params, optimizers, upd["rows"], {"opacities": upd["opacities"], "scales": upd["scales"]})
        append_rows(params, optimizers, {k: params[k].detach()[src] for k in KEYS})
        return add

    def _inject_noise(self, params, lr: float) -> None:
        with torch.no_grad():
            o = torch.sigmoid(params["opacities"])
            gate = torch.sigmoid(100 * ((1 - o) - 0.995))
            cov = covariance(params["quats"], params["scales"])
            noise = torch.randn(params["means"].shape, generator=self.gen)
            params["means"] += (cov @ noise[:, :, None])[:, :, 0] * (gate * lr * self.noise_lr)[:, None]


# ---------------------------------------------------------------------------- loop
def _loss(img, tgt, params, cfg: TrainConfig) -> torch.Tensor:
    loss = (1 - cfg.ssim_lambda) * (img - tgt).abs().mean() + cfg.ssim_lambda * (1 - ssim(img, tgt))
    if cfg.opacity_reg:
        loss = loss + cfg.opacity_reg * torch.sigmoid(params["opacities"]).mean()
    if cfg.scale_reg:
        loss = loss + cfg.scale_reg * torch.exp(params["scales"]).mean()
    return loss


def train(params, optimizers, strategy, cameras: list[Camera], images: list[torch.Tensor], cfg: TrainConfig,
          progress: bool = False, test: tuple[list[Camera], list[torch.Tensor]] | None = None,
          background: torch.Tensor | None = None) -> dict:
    """Optimise ``params`` on (``cameras``, ``images``); returns a log (loss, count, test PSNR, seconds).

    With ``cfg.compensation``, ``log["compensation"]`` is the jointly trained net (None if
    training stopped before its start step) and ``log["compensation_start"]`` its start step.
    """
    from .render import render

    gen = torch.Generator().manual_seed(cfg.seed)
    state = strategy.initialize_state()
    comp_start = cfg.compensation.start(strategy) if cfg.compensation is not None else None
    net = net_opt = None
    takes_lr = "lr" in inspect.signature(strategy.step_post_backward).parameters  # gsplat's MCMCStrategy
    gamma = 0.01 ** (1.0 / max(cfg.steps, 1))
    views = torch.randint(len(cameras), (cfg.steps,), generator=gen).tolist()  # drawn up front: resumable
    log = {"steps": [], "loss": [], "gaussians": [], "test_psnr": []}
    stop = cfg.steps if cfg.stop_step is None else min(cfg.stop_step, cfg.steps)
    it = range(cfg.start_step, stop)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="train", unit="step")
    t0 = time.perf_counter()
    step = cfg.start_step - 1
    for step in it:
        i = views[step]
        degree = min(cfg.sh_degree, step // max(cfg.sh_degree_interval, 1))
        res = render(params_to_scene(params), cameras[i], sh_degree=degree, background=background)
        info = {"width": cameras[i].width, "height": cameras[i].height, "n_cameras": 1, "camera": cameras[i],
                "visible": res.visible, "render": res}
        strategy.step_pre_backward(params, optimizers, state, step, info)
        image = res.image
        if comp_start is not None and step >= comp_start:
            if net is None:
                net, net_opt = cfg.compensation.build()
            image = net(image)
        loss = _loss(image, images[i], params, cfg)
        loss.backward()
        for opt in [*optimizers.values(), *([net_opt] if net_opt else [])]:
            opt.step()
            opt.zero_grad(set_to_none=True)
        for g in optimizers["means"].param_groups:
            g["lr"] *= gamma
        post_kw = {"lr": optimizers["means"].param_groups[0]["lr"]} if takes_lr else {}
        strategy.step_post_backward(params, optimizers, state, step, info, **post_kw)
        over = cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s
        if step % cfg.log_every == 0 or step == stop - 1 or over:
            log["steps"].append(step)
            log["loss"].append(float(loss.detach()))
            log["gaussians"].append(len(params["means"]))
            if progress:
                it.set_postfix(loss=f"{float(loss.detach()):.4f}", n=len(params["means"]))
        if over:
            break
    log["steps_done"] = step + 1
    log["seconds"] = time.perf_counter() - t0
    log["strategy_state"] = {k: v for k, v in state.items() if isinstance(v, (int, float))}
    if comp_start is not None:
        log["compensation"] = net.eval() if net is not None else None
        log["compensation_start"] = comp_start
    if test is not None:
        log["test_psnr"] = evaluate(params, *test, background=background, compensation=log.get("compensation"))
    return log


def evaluate(params, cameras: list[Camera], images: list[torch.Tensor], background=None,
             compensation=None) -> list[float]:
    """PSNR of the renders (through the ``compensation`` net, if given) against ``images``, one per camera."""
    from .render import render

    with torch.no_grad():
        scene = params_to_scene(params)
        return [psnr(apply(compensation, render(scene, c, background=background).image), img)
                for c, img in zip(cameras, images)]


def save_trained(params, path, compensation=None) -> GaussianScene:
    """Write ``params`` as a scene file (format by extension) and, with a ``compensation`` net,
    its sidecar ``NAME.compensation.safetensors`` (read back and applied by ``prunekit eval``)."""
    from .formats import write_scene

    scene = params_to_scene({k: v.detach() for k, v in params.items()})
    write_scene(scene, path)
    side = sidecar_path(path)
    if compensation is not None:
        save_compensation(compensation, side, scene)
    elif side.exists():  # a stale net from an earlier run would be refused by eval: remove it
        side.unlink()
    return scene
