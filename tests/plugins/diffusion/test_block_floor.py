"""keep_per_block: the structural constraint through prunekit.select (groups + floor), and recovery recipes."""

import copy

import pytest
import torch

from .conftest import class_calib


def _op(name, macs):
    from prunekit_diffusion.operators import Operator

    return Operator(name=name, kind="resnet", cls="ResnetBlock2D", params=1, macs=macs, removable=True)


def _scores(values, ops):
    from prunekit import Scores
    from prunekit_diffusion.scoring import GROUP, mac_costs

    return Scores.single(torch.tensor(values, dtype=torch.float64), cost=mac_costs(ops), name=GROUP)


def test_block_floor_keeps_the_best_operator_of_every_block():
    from prunekit import Budget
    from prunekit.errors import UsageError
    from prunekit_diffusion.scoring import block_of, select_operators

    ops = [_op("down_blocks.0.resnets.0", 10), _op("down_blocks.0.resnets.1", 10),
           _op("mid_block.resnets.0", 10), _op("mid_block.attentions.0", 10),
           _op("up_blocks.0.resnets.0", 10), _op("up_blocks.0.resnets.1", 10)]
    assert [block_of(o) for o in ops[1:4]] == ["down_blocks.0", "mid_block", "mid_block"]
    assert block_of(_op("transformer_blocks.3", 1)) == "transformer_blocks"
    s = _scores([6.0, 5.0, 1.0, 2.0, 4.0, 3.0], ops)  # the whole mid block scores lowest
    plain = select_operators(s, ops, Budget(cost=40.0))["operators"].tolist()
    assert plain == [True, True, False, False, True, True]  # the mid block is emptied
    floor = select_operators(s, ops, Budget(cost=40.0), keep_per_block=1)["operators"].tolist()
    # the mid block's best (the attention, 2.0) is forced and paid first, then the best of the rest
    assert floor == [True, True, False, True, True, False]
    assert select_operators(s, ops, Budget(cost=40.0), keep_per_block=0) == select_operators(s, ops, Budget(cost=40.0))
    with pytest.raises(UsageError, match="per block already costs"):
        select_operators(s, ops, Budget(cost=20.0), keep_per_block=1)
    with pytest.raises(UsageError, match="non-negative integer"):
        select_operators(s, ops, Budget(cost=40.0), keep_per_block=-1)


@pytest.mark.parametrize("rounds", [1, 2])
def test_pruned_unet_keeps_an_operator_in_every_block(unet, scheduler, rounds):
    from prunekit_diffusion.api import prune_denoiser
    from prunekit_diffusion.operators import total_macs
    from prunekit_diffusion.scoring import block_of

    calib = class_calib(n=2, steps=1)
    emptied = []
    for method in ("ld-pruner", "random"):
        if method == "random" and rounds > 1:
            continue
        plain = prune_denoiser(unet, scheduler, keep_macs=0.6, calib=calib, method=method, progress=False, rounds=rounds)
        res = prune_denoiser(unet, scheduler, keep_macs=0.6, calib=calib, method=method, progress=False,
                             rounds=rounds, keep_per_block=1)
        units = [o for o in res.operators if o.removable]
        blocks = {block_of(o) for o in units}
        kept = {block_of(o) for o, k in zip(units, res.mask["operators"]) if k}
        emptied.append(blocks - {block_of(o) for o, k in zip(units, plain.mask["operators"]) if k})
        assert kept == blocks and res.report.extra["keep_per_block"] == 1
        assert total_macs(res.model, calib.example(res.model)) <= 0.6 * total_macs(unet, calib.example(unet)) + 1
        assert torch.equal(plain.scores["operators"], res.scores["operators"]) or rounds > 1
    assert any(emptied), "without the floor some block should lose every operator (else this test shows nothing)"


def test_recovery_modes(unet):
    from diffusers import DDPMScheduler
    from prunekit_diffusion.recovery import RECOVERY_MODES, distill_finetune

    sched = DDPMScheduler(num_train_timesteps=1000)
    data = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cond = {"class_labels": torch.arange(32) % 10}
    assert RECOVERY_MODES["distill"] == (0.0, 1.0) and RECOVERY_MODES["denoise"] == (1.0, 0.0)
    # pure distillation of an exact copy: zero loss, zero gradients, the weights stay put
    twin = copy.deepcopy(unet)
    log = distill_finetune(twin, unet, sched, data, cond, steps=3, batch_size=8, lr=1e-2, task_weight=0.0, alpha=1.0)
    assert all(r["distill"] == 0.0 for r in log)
    assert all(torch.equal(p, q) for p, q in zip(twin.parameters(), unet.parameters()))
    # plain denoising moves the same copy (its noise-prediction loss is not zero)
    den = copy.deepcopy(unet)
    distill_finetune(den, unet, sched, data, cond, steps=3, batch_size=8, lr=1e-2, task_weight=1.0, alpha=0.0)
    assert not all(torch.equal(p, q) for p, q in zip(den.parameters(), unet.parameters()))
