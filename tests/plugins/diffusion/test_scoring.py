"""LD-Pruner scores: formula, determinism, and selection under a MAC budget."""

import pytest
import torch

from .conftest import class_calib


def test_latent_distance_formula():
    from prunekit_diffusion.scoring import latent_distance

    ref = torch.tensor([[0.0, 0.0], [2.0, 4.0]])  # mean (1, 2), std (sqrt2, 2sqrt2)
    cand = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # mean (1, 1), std (0, 0)
    expected = 1.0 + (2.0 + 8.0) ** 0.5
    assert latent_distance(ref, cand) == pytest.approx(expected)
    assert latent_distance(ref, ref) == 0.0
    assert latent_distance(ref, torch.full_like(ref, float("nan"))) == float("inf")


def test_scores_deterministic_and_zero_for_a_no_op(unet, scheduler):
    from prunekit_diffusion.operators import discover_operators
    from prunekit_diffusion.scoring import ld_pruner_scores

    # an attention whose output projection is zero adds nothing to its residual:
    # bypassing it leaves the latents bit-identical, so its score must be exactly 0
    with torch.no_grad():
        unet.mid_block.attentions[0].to_out[0].weight.zero_()
        unet.mid_block.attentions[0].to_out[0].bias.zero_()
    calib = class_calib(n=3, steps=2)
    ops = discover_operators(unet, calib=calib)
    s1 = ld_pruner_scores(unet, scheduler, ops, calib, progress=False)
    s2 = ld_pruner_scores(unet, scheduler, ops, calib, progress=False)
    assert torch.equal(s1["operators"], s2["operators"])
    names = [op.name for op in ops if op.removable]
    vals = dict(zip(names, s1["operators"].tolist()))
    assert vals["mid_block.attentions.0"] == 0.0
    assert all(v > 0 for k, v in vals.items() if k != "mid_block.attentions.0")
    assert torch.equal(s1.cost["operators"], torch.tensor([float(op.saved_macs) for op in ops if op.removable], dtype=torch.float64))
    # a different seed gives different latents, hence different scores
    s3 = ld_pruner_scores(unet, scheduler, ops, class_calib(n=3, steps=2, seed=5), progress=False)
    assert not torch.equal(s1["operators"], s3["operators"])


def test_scoring_runs_in_eval_mode_and_restores_mode(dit, scheduler):
    from prunekit_diffusion.operators import discover_operators
    from prunekit_diffusion.scoring import ld_pruner_scores

    calib = class_calib(n=2, steps=1)
    ops = discover_operators(dit, calib=calib)
    dit.train()  # DiT drops class labels at random in train mode (METHODS.md §10)
    a = ld_pruner_scores(dit, scheduler, ops, calib, progress=False)
    assert dit.training
    b = ld_pruner_scores(dit, scheduler, ops, calib, progress=False)
    assert torch.equal(a["operators"], b["operators"])


def test_needs_two_samples(unet, scheduler):
    from prunekit.errors import UsageError
    from prunekit_diffusion.operators import discover_operators
    from prunekit_diffusion.scoring import ld_pruner_scores

    calib = class_calib(n=1)
    with pytest.raises(UsageError, match="at least 2"):
        ld_pruner_scores(unet, scheduler, discover_operators(unet, calib=calib), calib, progress=False)


@pytest.mark.parametrize("keep", [0.9, 0.7, 0.55])
def test_prune_respects_mac_budget(unet, scheduler, keep):
    from prunekit_diffusion.api import prune_denoiser
    from prunekit_diffusion.operators import total_macs

    calib = class_calib(n=2, steps=1)
    res = prune_denoiser(unet, scheduler, keep_macs=keep, calib=calib, progress=False)
    before = total_macs(unet, calib.example(unet))
    after = total_macs(res.model, calib.example(res.model))
    assert after <= keep * before
    assert res.report.after["macs"] == after and res.report.before["macs"] == before
    # the walk stops only when the next operator would overflow the budget
    kept = [op for op, k in zip([o for o in res.operators if o.removable], res.mask["operators"].tolist()) if k]
    assert len(res.removed) + len(kept) == sum(o.removable for o in res.operators)
    # the original model is untouched
    assert sum(p.numel() for p in unet.parameters()) == res.report.before["params"]


def test_budget_below_fixed_part_is_a_usage_error(unet, scheduler):
    from prunekit.errors import UsageError
    from prunekit_diffusion.api import prune_denoiser

    with pytest.raises(UsageError, match="cannot be removed"):
        prune_denoiser(unet, scheduler, keep_macs=0.01, calib=class_calib(n=2, steps=1), method="random")


def test_random_baseline_is_seeded(unet, scheduler):
    from prunekit_diffusion.api import prune_denoiser

    calib = class_calib(n=2, steps=1)
    a = prune_denoiser(unet, scheduler, keep_macs=0.7, calib=calib, method="random", seed=1)
    b = prune_denoiser(unet, scheduler, keep_macs=0.7, calib=calib, method="random", seed=1)
    c = prune_denoiser(unet, scheduler, keep_macs=0.7, calib=calib, method="random", seed=2)
    assert a.mask == b.mask
    assert torch.equal(a.scores["operators"], b.scores["operators"])
    assert not torch.equal(a.scores["operators"], c.scores["operators"])


def test_guidance_uses_the_null_class_only_where_one_exists(unet, dit):
    from prunekit.errors import UsageError
    from prunekit_diffusion.api import make_calibration, null_class

    assert null_class(dit) == 10  # DiT's label table has a dropout row
    assert null_class(unet) is None  # UNet2DModel's class embedding has none
    calib = make_calibration(dit, [3], n=2, steps=1, guidance_scale=2.0)
    assert calib.uncond["class_labels"].tolist() == [10, 10] and calib.cond["class_labels"].tolist() == [3, 3]
    with pytest.raises(UsageError, match="null"):
        make_calibration(unet, [3], n=2, steps=1, guidance_scale=2.0)
