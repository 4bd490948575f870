"""APTP: gates, router, slicing, bundle round trip, routed pipeline (tiny offline UNets, METHODS.md 6.3)."""

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from prunekit import InputError, UsageError  # noqa: E402
from prunekit_diffusion.aptp.gating import discover, gated_macs, install  # noqa: E402
from prunekit_diffusion.aptp.router import AptpRouter, resource_loss, sinkhorn  # noqa: E402
from prunekit_diffusion.aptp.slicing import slice_expert  # noqa: E402
from prunekit_diffusion.macs import count_macs  # noqa: E402


def tiny_unet(seed=0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
                                norm_num_groups=4, attention_head_dim=4).eval()


def inputs(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 16, 16, generator=g), torch.tensor([10, 500, 900][:n]), torch.randn(n, 5, 8, generator=g)


def random_code(layout, seed=0, p=0.6):
    g = torch.Generator().manual_seed(seed)
    bits = (torch.rand(layout.dim, generator=g) < p).float()
    for grp in layout.width:
        bits[grp.offset] = 1.0
    return bits


def test_layout_covers_groups_heads_chunks_and_depth():
    lay = discover(tiny_unet())
    kinds = {g.kind for g in lay.groups}
    assert kinds == {"resnet", "heads", "ff", "depth"}
    heads = [g for g in lay.groups if g.kind == "heads"]
    assert all(g.size == 4 and g.unit == 4 for g in heads)  # 16 channels / head_dim 4
    # resnets that change the channel count get width gates but no depth gate
    depth = {g.module for g in lay.depth}
    assert "up_blocks.0.resnets.0" not in depth and "mid_block.resnets.0" in depth


def test_all_ones_gates_reproduce_the_unpruned_output_exactly():
    unet = tiny_unet()
    x, t, e = inputs()
    with torch.no_grad():
        ref = unet(x, t, e).sample
        ctl = install(unet)
        ctl.set(torch.ones(3, ctl.layout.dim))
        assert torch.equal(unet(x, t, e).sample, ref)
        ctl.set(torch.ones(1, ctl.layout.dim).repeat(3, 1) * 0 + random_code(ctl.layout))
        assert not torch.allclose(unet(x, t, e).sample, ref)
        ctl.remove()
        assert torch.equal(unet(x, t, e).sample, ref)


def test_per_sample_gates_and_cfg_doubled_batch():
    unet = tiny_unet()
    x, t, e = inputs()
    ctl = install(unet)
    codes = torch.stack([torch.ones(ctl.layout.dim), random_code(ctl.layout, 1), random_code(ctl.layout, 2)])
    with torch.no_grad():
        ctl.set(codes)
        batch = unet(x, t, e).sample
        for i in range(3):
            ctl.set(codes[i])
            assert torch.allclose(unet(x[i : i + 1], t[i : i + 1], e[i : i + 1]).sample, batch[i : i + 1], atol=1e-5)
        ctl.set(codes)
        doubled = unet(torch.cat([x, x]), torch.cat([t, t]), torch.cat([e, e])).sample
    assert torch.allclose(doubled[3:], batch, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 3])
def test_sliced_expert_equals_gated_model_and_mac_model(seed):
    unet = tiny_unet()
    x, t, e = inputs()
    lay = discover(unet)
    macs = gated_macs(unet, lay, x[:1], t[:1], e[:1])
    assert macs(torch.ones(1, lay.dim)).item() == pytest.approx(macs.total)
    code = random_code(lay, seed)
    expert, spec = slice_expert(unet, lay, code)
    ctl = install(unet, lay)
    with torch.no_grad():
        ctl.set(code)
        gated = unet(x, t, e).sample
        ctl.remove()
        sliced = expert(x, t, e).sample
    assert spec["removed"] or any(len(v) < lay.groups[0].size for v in spec["keep"].values())
    assert torch.allclose(sliced, gated, atol=1e-5)
    assert sum(p.numel() for p in expert.parameters()) < sum(p.numel() for p in unet.parameters())
    assert macs(code[None]).item() == pytest.approx(count_macs(expert, x[:1], t[:1], e[:1])[""], rel=1e-6)


def test_sinkhorn_balances_a_batch_that_prefers_one_code():
    g = torch.Generator().manual_seed(0)
    sims = torch.rand(64, 4, generator=g) * 0.1
    sims[:, 0] += 0.2  # every prompt is closest to code 0
    assert torch.bincount(sims.argmax(1), minlength=4).tolist() == [64, 0, 0, 0]
    plan = sinkhorn(sims, eps=0.05, iters=3)
    assert torch.allclose(plan.sum(1), torch.ones(64), atol=1e-5)
    counts = torch.bincount(plan.argmax(1), minlength=4)
    assert counts.min() >= 8 and counts.max() <= 28, counts


def test_resource_loss_drives_macs_toward_target():
    unet = tiny_unet()
    x, t, e = inputs(1)
    lay = discover(unet)
    macs = gated_macs(unet, lay, x, t, e)
    router = AptpRouter(lay, emb_dim=6, n_codes=3)
    opt = torch.optim.Adam(router.parameters(), 0.3)
    emb = torch.randn(16, 6, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    start = macs.ratio(router(emb)["gates"]).mean().item()
    for _ in range(50):
        loss = resource_loss(macs.ratio(router(emb)["gates"]), 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    router.eval()
    end = macs.ratio(router.code_gates()).mean().item()
    assert start > 0.85 and abs(end - 0.5) < 0.1, (start, end)


def _trained_router(unet, steps=6, codes=3):
    from diffusers import DDPMScheduler

    from prunekit_diffusion.aptp.train import AptpConfig, train_router

    g = torch.Generator().manual_seed(0)
    emb = torch.randn(24, 6, generator=g)
    data = {"images": torch.randn(24, 4, 16, 16, generator=g), "encoder_hidden_states": torch.randn(24, 5, 8, generator=g),
            "prompt_emb": emb}
    batches = lambda step: {k: v[(torch.arange(8) + 8 * max(step, 0)) % 24] for k, v in data.items()}  # noqa: E731
    cfg = AptpConfig(n_codes=codes, steps=steps, batch=8, keep_macs=0.5, lr=0.2, log_every=1, warmup=0.3)
    router, macs, log = train_router(unet, DDPMScheduler(num_train_timesteps=1000), batches, cfg)
    return router, macs, log, emb


def test_training_loop_logs_and_leaves_the_unet_untouched(tmp_path):
    unet = tiny_unet()
    x, t, e = inputs()
    with torch.no_grad():
        ref = unet(x, t, e).sample
    router, macs, log, _ = _trained_router(unet)
    assert len(log) == 6 and {"ddpm", "resource", "contrastive", "distill", "codes"} <= set(log[0])
    assert log[-1]["mac_ratio"] < log[0]["mac_ratio"]
    with torch.no_grad():
        assert torch.equal(unet(x, t, e).sample, ref)  # frozen and unhooked afterwards


def test_one_code_static_training_stays_finite():
    router, macs, log, _ = _trained_router(tiny_unet(), steps=4, codes=1)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert torch.isfinite(router.codes).all()


def step_setup():
    """A tiny UNet, its gate layout and MAC model, and one fixed training batch of 8 for ``step_losses``."""
    unet = tiny_unet()
    layout = discover(unet)
    x, t, e = inputs()
    macs = gated_macs(unet, layout, x[:1], t[:1], e[:1])
    g = torch.Generator().manual_seed(2)
    b = {"images": torch.randn(8, 4, 16, 16, generator=g), "encoder_hidden_states": torch.randn(8, 5, 8, generator=g),
         "prompt_emb": torch.randn(8, 6, generator=g)}
    return unet, layout, macs, b


def test_step_losses_assignment_term_moves_the_codes_only_when_asked():
    """``assign_codes=False``: the assignment loss trains the predictor, not the codes (same value)."""
    from diffusers import DDPMScheduler

    from prunekit_diffusion.aptp.train import AptpConfig, step_losses

    unet, layout, macs, b = step_setup()
    ctl = install(unet, layout)
    grads, values = {}, {}
    try:
        for flag in (True, False):
            torch.manual_seed(0)
            router = AptpRouter(layout, 6, 3).train()
            torch.manual_seed(1)
            terms, r = step_losses(router, unet, ctl, macs, DDPMScheduler(num_train_timesteps=1000), b,
                                   AptpConfig(n_codes=3, assign_codes=flag))
            assert r["plan"] is not None and {"ddpm", "distill", "resource", "std", "max"} <= set(terms)
            values[flag] = terms["assign"].item()
            grads[flag] = torch.autograd.grad(terms["assign"], [router.codes, router.predictor[0].weight],
                                              allow_unused=True)
    finally:
        ctl.remove()
    assert values[True] == pytest.approx(values[False])
    assert grads[True][0].abs().sum() > 0 and grads[False][0] is None  # no path from the term to the codes
    assert grads[False][1].abs().sum() > 0  # the predictor still learns to follow the plan


def test_export_reload_round_trip_and_bad_manifests(tmp_path):
    from prunekit_diffusion.aptp.bundle import export_experts, load_bundle

    unet = tiny_unet()
    router, macs, _, emb = _trained_router(unet, steps=3)
    experts = export_experts(tmp_path / "b", router, macs, unet)
    b = load_bundle(tmp_path / "b")
    assert len(b.experts) == 3
    assert torch.equal(b.router.route(emb), router.route(emb))
    x, t, e = inputs()
    with torch.no_grad():
        for a, c in zip(experts, b.experts):
            assert torch.equal(a(x, t, e).sample, c(x, t, e).sample)
    with pytest.raises(InputError, match="exists and is not empty"):
        export_experts(tmp_path / "b", router, macs, unet)
    m = tmp_path / "b" / "aptp.json"
    good = m.read_text()
    for bad, msg in [("{oops", "unreadable manifest"), (json.dumps({"format": "x"}), "not an APTP manifest"),
                     (good.replace('"version": 1', '"version": 9'), "unsupported")]:
        m.write_text(bad)
        with pytest.raises(InputError, match=msg) as ei:
            load_bundle(tmp_path / "b")
        assert "\n" not in str(ei.value)
    m.write_text(good)
    (tmp_path / "b" / "expert_1.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="expert_1"):
        load_bundle(tmp_path / "b")


def test_pipeline_routes_groups_and_returns_caller_order():
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from prunekit_diffusion.aptp.bundle import AptpBundle
    from prunekit_diffusion.aptp.pipeline import AptpPipeline

    from .conftest import make_sd_pipeline

    pipe = make_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    unet = pipe.unet
    lay = discover(unet)
    torch.manual_seed(0)
    router = AptpRouter(lay, emb_dim=6, n_codes=3).eval()
    want = [0, 1, 2, 1, 0, 2, 2, 1]
    with torch.no_grad():  # predictor maps one-hot(k) to code k's logits, so prompt i must route to want[i]
        router.codes.copy_(torch.randn(3, lay.dim) * 4)
        w, off = torch.zeros(lay.dim, 6), 0
        w[:, :3] = router.codes.T
        for lin in router.predictor:
            lin.weight.copy_(w[off : off + lin.out_features])
            lin.bias.zero_()
            off += lin.out_features
    experts = [slice_expert(unet, lay, c)[0].eval() for c in router.code_gates()]
    prompts = ["abc", "dog", "cat", "a b", "xyz", "sun", "map", "car"]
    table = {p: torch.eye(6)[k] for p, k in zip(prompts, want)}
    encode = lambda ps: torch.stack([table[p] for p in ps])  # noqa: E731
    aptp = AptpPipeline(pipe, AptpBundle(router, None, experts, {}), encode)
    codes = aptp.route(prompts).tolist()
    assert codes == want
    kw = dict(num_inference_steps=2, output_type="np", height=32, width=32)
    out = aptp(prompt=prompts, generator=[torch.Generator().manual_seed(i) for i in range(8)], **kw)
    assert type(out).__name__ == "StableDiffusionPipelineOutput" and out.images.shape[0] == 8
    assert aptp.last_timing["codes"] == codes
    for i in (0, 5, 7):
        solo = StableDiffusionPipeline(**{**pipe.components, "unet": experts[codes[i]]})
        solo.set_progress_bar_config(disable=True)
        ref = solo(prompt=[prompts[i]], generator=[torch.Generator().manual_seed(i)], **kw).images[0]
        assert abs(out.images[i] - ref).max() < 1e-5
    assert isinstance(pipe.scheduler, DDIMScheduler)

    # one text-encoder pass shared by router and experts: same codes, same images, one call
    calls = []

    def condition(ps):
        calls.append(list(ps))
        embeds = pipe.encode_prompt(ps, "cpu", 1, False)[0]
        return encode(ps), {"prompt_embeds": embeds}

    with pytest.raises(UsageError, match="not both"):
        AptpPipeline(pipe, AptpBundle(router, None, experts, {}), encode, condition=condition)
    shared = AptpPipeline(pipe, AptpBundle(router, None, experts, {}), condition=condition)
    out2 = shared(prompt=prompts, generator=[torch.Generator().manual_seed(i) for i in range(8)], **kw)
    assert calls == [prompts] and shared.last_timing["codes"] == want
    assert abs(out2.images - out.images).max() < 1e-5


def _cli_workspace(tmp_path, n: int, seed: int):
    """A tiny UNet folder and an n-prompt data file under tmp_path; returns ``run(*args)`` for ``prunekit aptp``."""
    import numpy as np
    from typer.testing import CliRunner

    from prunekit_diffusion.aptp.cli import app

    tiny_unet().save_pretrained(tmp_path / "unet")
    g = np.random.default_rng(seed)
    np.savez(tmp_path / "d.npz", images=g.standard_normal((n, 4, 16, 16)).astype("float32"),
             prompts=np.array([f"p{i}" for i in range(n)]), prompt_emb=g.standard_normal((n, 6)).astype("float32"),
             encoder_hidden_states=g.standard_normal((n, 5, 8)).astype("float32"))
    return lambda *a: CliRunner().invoke(app, [str(x) for x in a])


def test_cli_train_export_info_and_errors(tmp_path):
    from prunekit_diffusion.aptp.bundle import load_bundle
    from prunekit_diffusion.plugins import APTP

    assert APTP.commands == {"aptp": "prunekit_diffusion.aptp.cli:app"}
    run = _cli_workspace(tmp_path, 12, seed=0)
    r = run("train", tmp_path / "unet", "--data", tmp_path / "d.npz", "-o", tmp_path / "ck", "--codes", "2",
            "--steps", "2", "--batch", "4", "--w-contrastive", "100")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ck" / "aptp.json").read_text())["config"]["w_contrastive"] == 100.0
    r = run("export", tmp_path / "ck", "--unet", tmp_path / "unet", "-o", tmp_path / "bundle")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("code ") == 2 and len(load_bundle(tmp_path / "bundle").experts) == 2
    r = run("info", tmp_path / "bundle")
    assert r.exit_code == 0 and len(json.loads(r.stdout)["codes"]) == 2
    # finetune: the shared UNet is trained under the routed codes, then the experts are sliced from it
    r = run("finetune", tmp_path / "ck", "--unet", tmp_path / "unet", "--data", tmp_path / "d.npz",
            "-o", tmp_path / "ft", "--steps", "3", "--batch", "4", "--lr", "1e-2")
    assert r.exit_code == 0, r.output
    plain, tuned = load_bundle(tmp_path / "bundle"), load_bundle(tmp_path / "ft")
    assert tuned.manifest["finetune"]["steps"] == 3 and len(tuned.experts) == 2
    assert [c["mac_ratio"] for c in tuned.manifest["codes"]] == [c["mac_ratio"] for c in plain.manifest["codes"]]
    moved = [max((a - b).abs().max().item() for a, b in zip(e.state_dict().values(), f.state_dict().values()))
             for e, f in zip(plain.experts, tuned.experts)]
    assert max(moved) > 0
    r = run("finetune", tmp_path / "ck", "--unet", tmp_path / "unet", "--data", tmp_path / "d.npz",
            "-o", tmp_path / "ft", "--steps", "3")
    assert r.exit_code == 1 and "not empty" in r.output
    r = run("info", tmp_path / "unet")
    assert r.exit_code == 1 and r.output.strip().count("\n") == 0 and "not an APTP bundle" in r.output
    r = run("train", tmp_path / "unet", "--data", tmp_path / "d.npz", "-o", tmp_path / "x", "--keep-macs", "1.5")
    assert r.exit_code == 2 and "--keep-macs" in r.output
    r = run("train", tmp_path / "unet", "--data", tmp_path / "d.npz", "-o", tmp_path / "x", "--w-contrastive", "-1")
    assert r.exit_code == 2 and "--w-contrastive" in r.output
    r = run("train", tmp_path / "unet", "--data", tmp_path / "d.npz", "-o", tmp_path / "x", "--lr-warmup", "-1")
    assert r.exit_code == 2 and "--lr-warmup" in r.output


def test_cli_train_reference_recipe_flags(tmp_path):
    """--lr-warmup / --paper-losses reach the config; --eval-noise-seed is saved and deploys the sampled gates."""
    from prunekit_diffusion.aptp.bundle import load_bundle

    run = _cli_workspace(tmp_path, 8, seed=1)
    r = run("train", tmp_path / "unet", "--data", tmp_path / "d.npz", "-o", tmp_path / "ck", "--codes", "2",
            "--steps", "3", "--batch", "4", "--lr-warmup", "2", "--paper-losses", "--eval-noise-seed", "5")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ck" / "aptp.json").read_text())
    assert m["config"]["lr_warmup"] == 2 and m["config"]["paper_losses"] is True
    noisy = load_bundle(tmp_path / "ck").router
    assert noisy.eval_noise_seed == 5
    sampled = noisy.eval().code_gates()
    noisy.eval_noise_seed = None
    assert not torch.equal(sampled, noisy.code_gates())  # the saved seed changes the deployed gates
    r = run("export", tmp_path / "ck", "--unet", tmp_path / "unet", "-o", tmp_path / "bundle")
    assert r.exit_code == 0, r.output
    exported = load_bundle(tmp_path / "bundle")
    assert exported.router.eval_noise_seed == 5
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tmp_path / "unet")
    want = [sum(p.numel() for p in slice_expert(unet, noisy.layout, (g > 0.5).float())[0].parameters()) for g in sampled]
    assert [c["params"] for c in exported.manifest["codes"]] == want  # experts sliced with the sampled gates


def test_bench_expert_steps_share_vs_per_expert():
    from .conftest import load_script

    steps = load_script("bench/bench_aptp.py").expert_steps
    # equal total compute: routed share, floor 10 for a used code, 0 when unused or rounding to 0
    assert [steps(600, n, 2048, False) for n in (1024, 20, 1, 0)] == [300, 10, 0, 0]
    # equal steps per deployed model: every used expert gets all the steps
    assert [steps(600, n, 2048, True) for n in (1024, 1, 0)] == [600, 600, 0]
