"""PruneStrategy inside a gsplat-style training loop on CPU (reference renderer).

gsplat's ``DefaultStrategy`` densifies by the image-plane gradient of ``info["means2d"]``; the
reference renderer does not return it, so ``_render_with_info`` captures the projected centres
of the render itself (a view [1, N, 2] that the rasteriser then consumes) and the radii, giving
gsplat the same ``info`` keys its CUDA rasteriser provides. gsplat 1.4's ``MCMCStrategy`` calls
two CUDA kernels (``quat_scale_to_covar_preci`` for the position noise, ``compute_relocation``
for eq. 9 of Kheradmand et al. 2024); ``cpu_mcmc_kernels`` replaces them with the same formulas
in PyTorch so gsplat's own relocation/growth code runs here.
"""

import importlib
import math
import sys

import pytest
import torch

gsplat = pytest.importorskip("gsplat")
from gsplat.strategy import DefaultStrategy, MCMCStrategy  # noqa: E402

import prunekit  # noqa: E402
from prunekit_splat import render as render_mod  # noqa: E402
from prunekit_splat.cameras import synthesize_cameras  # noqa: E402
from prunekit_splat.geometry import covariance  # noqa: E402
from prunekit_splat.metrics import ssim  # noqa: E402
from prunekit_splat.strategy import PruneStrategy, params_to_scene  # noqa: E402
from .tiny_scenes import random_scene  # noqa: E402

RES = 32


@pytest.fixture(scope="module")
def views():
    teacher = random_scene()
    cams = synthesize_cameras(teacher, n=6, width=RES, height=RES, seed=1)
    with torch.no_grad():
        images = [render_mod.render(teacher, c, backend="torch").image for c in cams]
    return teacher, cams, images


def _student(teacher, n=240, seed=2):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(teacher), (n,), generator=g)
    means = teacher.means[idx] + 0.05 * torch.randn(n, 3, generator=g)
    params = torch.nn.ParameterDict({
        "means": means, "quats": torch.randn(n, 4, generator=g), "scales": torch.full((n, 3), math.log(0.1)),
        "opacities": torch.full((n,), 0.0), "sh0": torch.zeros(n, 1, 3), "shN": torch.zeros(n, 0, 3)})
    lrs = {"means": 2e-3, "quats": 1e-3, "scales": 5e-3, "opacities": 5e-2, "sh0": 2.5e-2, "shN": 1e-3}
    opts = {k: torch.optim.Adam([{"params": [params[k]], "lr": lrs[k], "name": k}], eps=1e-15) for k in params}
    return params, opts


def _render_with_info(params, cam):
    """Render with the reference renderer and build gsplat's ``info`` (means2d with grad, radii)."""
    captured = {}
    orig = render_mod.project

    def project(*a, **k):
        p = orig(*a, **k)
        m2d = p.xy[None]
        m2d.retain_grad()
        p.xy = m2d[0]
        captured["means2d"], captured["proj"] = m2d, p
        return p

    render_mod.project = project
    try:
        res = render_mod.render(params_to_scene(params, detach=False), cam, backend="torch")
    finally:
        render_mod.project = orig
    p = captured["proj"]
    a, b, c = p.cov2d.detach().unbind(-1)
    lam = 0.5 * (a + c) + torch.sqrt((0.25 * (a - c) ** 2 + b * b).clamp_min(0))
    radii = torch.where(res.visible, torch.ceil(3 * lam.sqrt()), torch.zeros_like(lam)).to(torch.int32)[None]
    info = {"means2d": captured["means2d"], "radii": radii, "gaussian_ids": None, "width": cam.width,
            "height": cam.height, "n_cameras": 1}
    return res.image, info


def _eval_loss(params, cams, images) -> float:
    with torch.no_grad():
        scene = params_to_scene(params)
        return sum(float((render_mod.render(scene, c, backend="torch").image - t).abs().mean())
                   for c, t in zip(cams, images)) / len(cams)


def _check_optimizer_state(params, opts, state):
    n = len(params["means"])
    for k, p in params.items():
        assert p.shape[0] == n
        opt = opts[k]
        assert opt.param_groups[0]["params"][0] is p
        st = opt.state[p]
        assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape
    for k in ("grad2d", "count"):
        if state.get(k) is not None:
            assert state[k].shape == (n,)


def _train(strategy, views, steps, params=None, opts=None, probe=()):
    """Train ``steps`` steps; returns params, optimisers, state, per-step counts and eval losses
    (mean L1 over all views) at the start (key 0), after each ``probe`` step and at the end."""
    teacher, cams, images = views
    if params is None:
        params, opts = _student(teacher)
    strategy.check_sanity(params, opts)
    state = strategy.initialize_state(scene_scale=1.0)  # MCMCStrategy takes no scene_scale: dropped
    counts = []  # (step, count before post-backward, count after)
    losses = {0: _eval_loss(params, cams, images)}
    g = torch.Generator().manual_seed(3)
    for step in range(1, steps + 1):  # from 1: gsplat 1.4 resets opacities at step % reset_every == 0
        i = int(torch.randint(len(cams), (1,), generator=g))
        img, info = _render_with_info(params, cams[i])
        strategy.step_pre_backward(params, opts, state, step, info)
        loss = 0.8 * (img - images[i]).abs().mean() + 0.2 * (1 - ssim(img, images[i]))
        loss.backward()
        for o in opts.values():
            o.step()
            o.zero_grad(set_to_none=True)
        before = len(params["means"])
        strategy.step_post_backward(params, opts, state, step, info, packed=False)
        counts.append((step, before, len(params["means"])))
        _check_optimizer_state(params, opts, state)
        if step in probe or step == steps:
            losses[step] = _eval_loss(params, cams, images)
    return params, opts, state, counts, losses


def test_default_strategy_prunes_on_schedule_and_keeps_adam_consistent(views):
    base = DefaultStrategy(refine_start_iter=3, refine_every=6, refine_stop_iter=13, reset_every=10_000,
                           grow_grad2d=3e-3, prune_opa=0.005)
    sched = prunekit.Schedule.decay([14, 20], fraction=0.5, decay=0.8)
    s = PruneStrategy(base=base, scorer="opacity", schedule=sched)
    params, opts, state, counts, loss = _train(s, views, 30, probe=(13, 14, 19, 20))
    grew = [c for c in counts if c[2] > c[1]]
    assert grew and all(step in (6, 12) for step, _, _ in grew), f"densification should run at refine steps: {counts}"
    for step, before, after in counts:
        if step in sched.steps:
            assert after == math.floor(sched.step_keep(step) * before + 1e-9), (step, before, after)
        elif step > 12:
            assert after == before, f"count changed off schedule at step {step}"
    events = state["prunekit"]
    assert [e["step"] for e in events] == [14, 20] and events[0]["before"] > events[0]["after"]
    # training converges before the prunes and recovers after each one
    assert loss[13] < loss[0] and loss[19] < loss[14] and loss[30] < loss[20], loss


def test_mcmc_strategy_prune_keeps_binoms_and_count(views, cpu_mcmc_kernels):
    base = MCMCStrategy(cap_max=400, refine_start_iter=2, refine_every=4, refine_stop_iter=40, min_opacity=0.005,
                        noise_lr=5e3)
    sched = prunekit.Schedule.one_shot(10, 0.4)
    s = PruneStrategy(base=base, scorer="sundae", schedule=sched, scorer_options={"max_neighbors": 8})
    params, opts, state, counts, loss = _train(s, views, 22, probe=(9, 10))
    assert counts[3][2] > counts[3][1], "MCMC should grow at its refine steps before the prune"
    step, before, after = counts[9]
    assert step == 10 and after == math.floor(0.4 * before + 1e-9)
    assert base.cap_max == after, "the MCMC cap must follow the pruned count"
    assert all(c[2] == after for c in counts[10:]), "MCMC relocation must not regrow after the prune"
    assert state["binoms"].shape == (51, 51), "the MCMC binomial table must not be sliced"
    assert loss[9] < loss[0] and loss[22] < loss[10], loss


def test_view_scorer_needs_cameras_and_uses_them(views):
    teacher, cams, _ = views
    params, opts = _student(teacher)
    for name in ("hits", "radsplat", "lightgaussian"):
        with pytest.raises(ValueError, match="cameras"):
            PruneStrategy(base=None, scorer=name).prune(params, opts, {}, prunekit.Budget(keep_ratio=0.5))
    s = PruneStrategy(base=None, scorer="hits", cameras=lambda: cams, score_resolution=24)
    expect = render_mod.accumulate_stats(params_to_scene(params), [c.scaled(24 / RES) for c in cams],
                                         names=["hits"])["hits"].float()
    assert torch.equal(s.score(params)["units"], expect)
    top = torch.sort(expect, descending=True, stable=True).indices[:120].sort().values
    means_before = params["means"].detach().clone()
    assert s.prune(params, opts, {}, prunekit.Budget(keep_ratio=0.5)) == 120
    assert torch.equal(params["means"], means_before[top])


def test_prune_to_cap_for_mcmc_output(views):
    teacher, _, _ = views
    params, opts = _student(teacher)
    with torch.no_grad():
        params["opacities"][:] = torch.linspace(-6, 6, len(params["means"]))
    s = PruneStrategy(base=MCMCStrategy(cap_max=240), scorer="random")
    state = s.initialize_state()
    assert s.prune_to_cap(params, opts, 500, state) == 0
    removed = s.prune_to_cap(params, opts, 100, state, scorer="opacity")
    assert removed == 140 and len(params["means"]) == 100
    assert torch.all(torch.sigmoid(params["opacities"]) > torch.sigmoid(torch.tensor(-6 + 12 * 139 / 239)))
    assert state["binoms"].shape == (51, 51)
    for k, p in params.items():
        assert opts[k].param_groups[0]["params"][0] is p
    with pytest.raises(ValueError):
        s.prune_to_cap(params, opts, -1)


def test_unknown_scorer_and_wrong_domain():
    with pytest.raises(prunekit.PluginError):
        PruneStrategy(base=None, scorer="no-such-scorer")


def test_clear_error_without_gsplat(monkeypatch):
    monkeypatch.setitem(sys.modules, "gsplat.strategy", None)
    monkeypatch.delitem(sys.modules, "prunekit_splat.strategy")
    with pytest.raises(ImportError, match="needs gsplat"):
        importlib.import_module("prunekit_splat.strategy")
    monkeypatch.undo()
    importlib.import_module("prunekit_splat.strategy")


@pytest.fixture
def cpu_mcmc_kernels(monkeypatch):
    """PyTorch stand-ins for gsplat 1.4's two CUDA kernels used by MCMCStrategy (same formulas)."""
    from gsplat.strategy import ops

    def covar(quats, scales, compute_covar=True, compute_preci=False, triu=False):
        return covariance(quats, torch.log(scales)), None

    def relocation(opacities, scales, ratios, binoms):
        n_max = binoms.shape[0]
        n = ratios.clamp(1, n_max).to(torch.float64)
        o = opacities.to(torch.float64)
        new_o = 1 - (1 - o) ** (1 / n)
        denom = torch.zeros_like(o)
        for i in range(1, int(n.max()) + 1):
            for k in range(i):
                term = float(binoms[i - 1, k]) * (-1) ** k * new_o ** (k + 1) / math.sqrt(k + 1)
                denom = denom + torch.where(n >= i, term, torch.zeros_like(term))
        return new_o.float(), (o / denom)[:, None].float() * scales

    monkeypatch.setattr(ops, "quat_scale_to_covar_preci", covar)
    monkeypatch.setattr(ops, "compute_relocation", relocation)
