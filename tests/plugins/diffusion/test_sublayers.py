"""``granularity="sublayer"``: DiT attention / feed-forward sublayers as LD-Pruner operators."""

import copy

import pytest
import torch

from .conftest import class_calib, make_dit, make_unet


def _out(model, calib):
    from prunekit_diffusion.sampling import denoise

    x = torch.randn(calib.n, model.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return denoise(model, x, torch.tensor(300), dict(calib.cond))


def _ops(model, calib, granularity="sublayer"):
    from prunekit_diffusion.operators import discover_operators

    return {op.name: op for op in discover_operators(model, calib=calib, granularity=granularity)}


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_discovery_and_costs(dit):
    from prunekit.errors import UsageError

    calib = class_calib()
    ops = _ops(dit, calib)
    assert list(ops) == [f"transformer_blocks.{j}.{s}" for j in range(3) for s in ("attn1", "ff")]
    assert all(op.removable and op.kind == "sublayer" and op.adaptor == "zero" for op in ops.values())
    blocks = _ops(dit, calib, "operator")
    for j in range(3):
        a, f = ops[f"transformer_blocks.{j}.attn1"], ops[f"transformer_blocks.{j}.ff"]
        assert a.params == _params(dit.transformer_blocks[j].attn1) and f.params == _params(dit.transformer_blocks[j].ff)
        assert a.macs > 0 and f.macs > 0
        # the block also runs its adaLN modulation: more than its two sublayers, not by much
        assert a.macs + f.macs < blocks[f"transformer_blocks.{j}"].macs < 1.2 * (a.macs + f.macs)
    with pytest.raises(UsageError, match="UNet"):
        _ops(make_unet(), calib)
    with pytest.raises(UsageError, match="granularity"):
        _ops(dit, calib, "heads")


def test_bypass_is_a_zero_branch(dit):
    """Bypassing ``attn1`` through the hook equals zeroing the sublayer's output projection (its branch
    adds nothing); both sublayers bypassed equal the whole block bypassed; hooks restore exactly."""
    from prunekit_diffusion.bypass import bypassed

    calib = class_calib()
    ops, blocks = _ops(dit, calib), _ops(dit, calib, "operator")
    ref = _out(dit, calib)
    with bypassed(dit, [ops["transformer_blocks.1.attn1"]]):
        hooked = _out(dit, calib)
    manual = copy.deepcopy(dit)
    proj = manual.transformer_blocks[1].attn1.to_out[0]
    torch.nn.init.zeros_(proj.weight)
    torch.nn.init.zeros_(proj.bias)
    assert not torch.equal(hooked, ref)
    torch.testing.assert_close(hooked, _out(manual, calib), rtol=0, atol=1e-6)
    with bypassed(dit, [ops["transformer_blocks.1.attn1"], ops["transformer_blocks.1.ff"]]):
        both = _out(dit, calib)
    with bypassed(dit, [blocks["transformer_blocks.1"]]):
        assert torch.equal(both, _out(dit, calib))
    assert torch.equal(_out(dit, calib), ref)


def test_physical_removal_and_round_trip(tmp_path):
    """Removal equals the hooked bypass; weights are gone; emptied blocks go as blocks (block 0 keeps
    norm1.emb); a second prune of the pruned model and a save/reload keep the outputs exactly."""
    from diffusers import DiTTransformer2DModel
    from prunekit_diffusion.bypass import ZeroSublayer, bypassed, remove_operators
    from prunekit_diffusion.serialization import MANIFEST, load_pruned, save_model

    dit, calib = make_dit(layers=4), class_calib()
    ops = _ops(dit, calib)
    first = [ops[n] for n in ("transformer_blocks.0.attn1", "transformer_blocks.0.ff", "transformer_blocks.2.attn1",
                              "transformer_blocks.2.ff", "transformer_blocks.3.attn1")]
    with bypassed(dit, first):
        expected = _out(dit, calib)
    pruned = copy.deepcopy(dit)
    records = remove_operators(pruned, first)
    assert [(r["name"], r["mode"]) for r in records] == [
        ("transformer_blocks.0", "replace"), ("transformer_blocks.3.attn1", "replace"), ("transformer_blocks.2", "delete")]
    assert pruned.config.num_layers == 3 and type(pruned.transformer_blocks[0]).__name__ == "SkippedBlock"
    assert isinstance(pruned.transformer_blocks[2].attn1, ZeroSublayer)
    assert not any(k.startswith("transformer_blocks.2.attn1.") for k in pruned.state_dict())
    assert _params(dit) - _params(pruned) == (sum(_params(dit.transformer_blocks[j]) for j in (0, 2))
                                              - _params(dit.transformer_blocks[0].norm1.emb)
                                              + _params(dit.transformer_blocks[3].attn1))
    assert torch.equal(_out(pruned, calib), expected)
    # second prune: current index 2 is original block 3 (its last sublayer: the block goes), 1 is block 1
    again = _ops(pruned, calib)
    assert list(again) == ["transformer_blocks.1.attn1", "transformer_blocks.1.ff", "transformer_blocks.2.ff"]
    remove_operators(pruned, [again["transformer_blocks.2.ff"], again["transformer_blocks.1.ff"]])
    assert pruned.config.num_layers == 2
    assert [r["name"] for r in pruned._prunekit_removed][-2:] == ["transformer_blocks.1.ff", "transformer_blocks.3"]
    out = _out(pruned, calib)
    save_model(pruned, tmp_path / "m")
    assert (tmp_path / MANIFEST).exists() is False and (tmp_path / "m" / MANIFEST).exists()
    back = load_pruned(tmp_path / "m")
    assert torch.equal(_out(back, calib), out) and _params(back) == _params(pruned)
    with pytest.raises(OSError):  # replaced sublayers: plain diffusers must not fill them with random weights
        DiTTransformer2DModel.from_pretrained(tmp_path / "m")


def test_prune_denoiser_at_sublayer_granularity(dit, scheduler):
    from prunekit_diffusion.api import prune_denoiser

    for method in ("ld-pruner", "random"):
        res = prune_denoiser(dit, scheduler, keep_macs=0.7, calib=class_calib(), method=method, progress=False,
                             granularity="sublayer")
        rep = res.report
        assert rep.after["macs"] <= 0.7 * rep.before["macs"] and rep.extra["granularity"] == "sublayer"
        assert len(res.scores["operators"]) == 6 and res.removed
        assert all(r["kind"] in ("sublayer", "block") for r in res.removed)
    blocks = prune_denoiser(dit, scheduler, keep_macs=0.7, calib=class_calib(), progress=False)
    assert len(blocks.scores["operators"]) == 3 and blocks.report.extra["granularity"] == "operator"
