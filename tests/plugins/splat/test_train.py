"""The small 3DGS trainer: MCMC relocation maths, strategy protocol, parameter/Adam row ops."""

import math

import torch

from prunekit_splat.cameras import Camera
from prunekit_splat.render import render
from prunekit_splat.train import (KEYS, MCMCStrategy, TrainConfig, append_rows, init_params, make_optimizers,
                                  params_to_scene, relocation, remove_rows, train)


def test_relocation_matches_paper_formula():
    o = torch.tensor([0.3, 0.8, 0.6])
    s = torch.log(torch.tensor([[0.1, 0.2, 0.3]] * 3))
    new_o, new_s = relocation(o, s, torch.tensor([1, 2, 3]))
    # one copy: unchanged
    assert math.isclose(float(new_o[0]), 0.3, rel_tol=1e-5)
    assert torch.allclose(new_s[0], s[0], atol=1e-5)
    # two copies: o' = 1 - sqrt(1 - o), D = 2 o' - o'^2 / sqrt 2, scale' = scale * o / D
    op = 1 - math.sqrt(1 - 0.8)
    assert math.isclose(float(new_o[1]), op, rel_tol=1e-5)
    assert torch.allclose(new_s[1], s[1] + math.log(0.8 / (2 * op - op * op / math.sqrt(2))), atol=1e-5)
    # three copies composite back to the original opacity: 1 - (1 - o')^3 = o
    assert math.isclose(1 - (1 - float(new_o[2])) ** 3, 0.6, rel_tol=1e-5)


def small_params(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    return init_params(pts, torch.rand(n, 3, generator=g), sh_degree=1)


def test_mcmc_relocates_dead_and_grows_with_consistent_adam_state():
    params = small_params()
    opts = make_optimizers(params, 1.0)
    loss = sum(p.sum() for p in params.values())  # give every Adam a state
    loss.backward()
    for o in opts.values():
        o.step()
    with torch.no_grad():
        params["opacities"][:50] = -12.0  # dead
    strat = MCMCStrategy(cap_max=205, refine_start_iter=0, refine_every=1, noise_lr=0.0)
    state = strat.initialize_state()
    strat.step_post_backward(params, opts, state, step=0, info={})
    assert state["relocated"] == 50 and state["grown"] == 5
    assert len(params["means"]) == 205
    assert (torch.sigmoid(params["opacities"]) > 0.005).all()
    for k in KEYS:
        st = opts[k].state[params[k]]
        assert opts[k].param_groups[0]["params"][0] is params[k]
        assert st["exp_avg"].shape == params[k].shape and st["exp_avg_sq"].shape == params[k].shape
        assert (st["exp_avg"][200:] == 0).all()  # appended rows start with fresh moments


def test_remove_rows_slices_params_state_and_strategy_tensors():
    params = small_params(10)
    opts = make_optimizers(params, 1.0)
    sum(p.sum() for p in params.values()).backward()
    for o in opts.values():
        o.step()
    before = params["means"].detach().clone()
    state = {"count": torch.arange(10.0), "note": 3}
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[1, 4]] = True
    remove_rows(params, opts, state, mask)
    assert torch.equal(params["means"].detach(), before[~mask])
    assert torch.equal(state["count"], torch.tensor([0.0, 2, 3, 5, 6, 7, 8, 9])) and state["note"] == 3
    assert opts["means"].state[params["means"]]["exp_avg"].shape == (8, 3)
    append_rows(params, opts, {k: params[k].detach()[:2] for k in KEYS})
    assert len(params["quats"]) == 10 and opts["quats"].state[params["quats"]]["exp_avg"].shape == (10, 4)


class CountingStrategy:
    """The gsplat strategy protocol, recording its calls."""

    def __init__(self):
        self.calls = []

    def initialize_state(self):
        return {"n": 0}

    def step_pre_backward(self, params, optimizers, state, step, info):
        self.calls.append(("pre", step, info["width"], bool(info["visible"].any())))

    def step_post_backward(self, params, optimizers, state, step, info, packed=False):
        assert params["means"].grad is None  # gradients are applied and cleared before the post hook
        state["n"] += 1
        self.calls.append(("post", step))


def test_train_fits_a_target_and_calls_the_strategy():
    teacher = small_params(60, seed=1)
    cam = Camera(torch.eye(4), torch.tensor([[24.0, 0, 12], [0, 24.0, 12], [0, 0, 1]]), 24, 24, "c")
    with torch.no_grad():
        target = render(params_to_scene(teacher), cam).image
    student = small_params(60, seed=2)
    opts = make_optimizers(student, 1.0)
    strat = CountingStrategy()
    log = train(student, opts, strat, [cam], [target], TrainConfig(steps=60, log_every=10, sh_degree=0),
                test=([cam], [target]))
    assert log["loss"][-1] < 0.7 * log["loss"][0]
    assert [c[0] for c in strat.calls[:2]] == ["pre", "post"] and len(strat.calls) == 120
    assert strat.calls[0][2] == 24 and strat.calls[0][3]
    assert log["test_psnr"][0] > 15


def test_time_budget_stops_early():
    params = small_params(20)
    cam = Camera(torch.eye(4), torch.tensor([[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]), 16, 16, "c")
    log = train(params, make_optimizers(params, 1.0), CountingStrategy(), [cam], [torch.zeros(16, 16, 3)],
                TrainConfig(steps=50, time_budget_s=0.0))
    assert log["steps_done"] == 1 and log["steps"] == [0]


def test_stopped_and_resumed_run_equals_one_run():
    import copy

    cam = Camera(torch.eye(4), torch.tensor([[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]), 16, 16, "c")
    cams, imgs = [cam, cam.scaled(0.75)], [torch.rand(16, 16, 3), torch.rand(12, 12, 3)]

    def mcmc():
        return MCMCStrategy(cap_max=45, refine_start_iter=2, refine_every=3, seed=1)

    torch.manual_seed(0)  # init_params draws the quaternions from the global RNG
    whole = small_params(40)
    train(whole, make_optimizers(whole, 1.0), mcmc(), cams, imgs, TrainConfig(steps=12, sh_degree=0))
    torch.manual_seed(0)
    part = small_params(40)
    opts, strat = make_optimizers(part, 1.0), mcmc()
    train(part, opts, strat, cams, imgs, TrainConfig(steps=12, sh_degree=0, stop_step=7))
    assert len(part["means"]) < len(whole["means"])  # stopped before the last growth
    part, opts, strat = copy.deepcopy((part, opts, strat))  # the branch point of a benchmark
    log = train(part, opts, strat, cams, imgs, TrainConfig(steps=12, sh_degree=0, start_step=7))
    assert log["steps_done"] == 12
    for k in KEYS:
        assert torch.equal(part[k], whole[k]), k
