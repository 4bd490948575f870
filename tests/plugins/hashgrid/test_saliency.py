"""Saliency gate + core augmented-Lagrangian budget."""

import torch

from prunekit.gates import straight_through_gate
from prunekit_hashgrid.saliency import CellMask, GlobalAdam, SaliencyBudget, SaliencyGrid, cell_index


def test_gate_is_hard_per_cell_with_straight_through_gradient():
    grid = SaliencyGrid(res=2, init_logit=0.0, init_spread=0.0)
    with torch.no_grad():
        grid.logits[:] = torch.tensor([-1.0, 2, -3, 4, -5, 6, -7, 8])
    x = torch.tensor([[0.1, 0.1, 0.1], [0.1, 0.1, 0.9], [0.9, 0.9, 0.9]])  # cells 0, 1, 7
    assert cell_index(x, 2).tolist() == [0, 1, 7]
    m = grid(x, hard=True)
    assert m.tolist() == [0.0, 1.0, 1.0]
    m.sum().backward()
    assert (grid.logits.grad[[0, 1, 7]] > 0).all() and grid.logits.grad[2] == 0
    assert grid.density().item() == 0.5 and grid.kept().sum() == 4


def test_budget_reaches_target_and_keeps_the_cells_the_task_needs():
    """Task loss wants every cell open, with per-cell importance; the enforcer must cut to 20 %, keeping the
    most important cells (GlobalAdam keeps the step proportional to each cell's net gradient)."""
    torch.manual_seed(0)
    n_side = 8
    grid = SaliencyGrid(res=n_side, init_logit=0.5)
    n = n_side**3
    importance = torch.rand(n)
    budget = SaliencyBudget(target=0.2, start=20, end=220, rho=20.0, eta=0.01)
    opt = GlobalAdam([grid.logits], lr=5e-2)
    for step in range(400):
        gates = straight_through_gate(grid.logits)
        task = -(importance * gates).sum() / n * 0.02  # open gates lower the task loss
        loss = task + budget.penalty(grid, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        budget.update(grid, step)
    kept = grid.kept()
    frac = kept.float().mean().item()
    assert 0.17 <= frac <= 0.205, frac
    # the kept cells are mostly the important ones
    top = importance >= importance.quantile(1 - frac)
    assert (kept & top).sum() >= 0.9 * kept.sum()


def test_cell_mask_matches_grid_interface():
    kept = torch.zeros(27, dtype=torch.bool)
    kept[13] = True  # centre cell of 3^3
    cm = CellMask(kept, 3)
    x = torch.tensor([[0.5, 0.5, 0.5], [0.1, 0.5, 0.5]])
    assert cm(x).tolist() == [1.0, 0.0] and cm.keep_fn()(x).tolist() == [True, False]


def test_dilation_adds_exactly_the_neighbours_and_training_keeps_them():
    from prunekit_hashgrid.saliency import dilate_cells
    from prunekit_hashgrid.train import dilate_mask

    res = 5
    kept = torch.zeros(res**3, dtype=torch.bool)
    kept[cell_index(torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]), res)] = True  # centre and a corner cell
    grown = dilate_cells(kept, res, 1).reshape(res, res, res)
    expect = torch.zeros(res, res, res, dtype=torch.bool)
    expect[1:4, 1:4, 1:4] = True  # 27 around the centre
    expect[0:2, 0:2, 0:2] = True  # 8 at the corner (clipped by the border)
    assert torch.equal(grown, expect)
    assert torch.equal(dilate_cells(kept, res, 0), kept)
    grid = SaliencyGrid(res=res, init_logit=0.0, init_spread=0.0)
    with torch.no_grad():
        grid.logits[:] = torch.where(kept, 1.0, -1.0)
    assert dilate_mask(grid, 1) == int(expect.sum()) - 2
    assert torch.equal(grid.kept().reshape(res, res, res), expect)
