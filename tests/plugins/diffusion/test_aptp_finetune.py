"""APTP shared fine-tune (gated shared UNet, routed code per sample) and export of the experts."""

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from prunekit_diffusion.aptp.finetune import RoutedGatedUNet, experts_from, finetune_shared  # noqa: E402
from prunekit_diffusion.aptp.gating import discover  # noqa: E402
from prunekit_diffusion.aptp.router import AptpRouter  # noqa: E402

from .test_aptp import inputs, random_code, tiny_unet  # noqa: E402


def fixed_router(layout, n_codes, seed=0):
    """A router whose codes are given random 0/1 codes (logits +-5 around the binarisation offset)."""
    router = AptpRouter(layout, emb_dim=6, n_codes=n_codes)
    bits = torch.stack([random_code(layout, seed + k, p=0.5) for k in range(n_codes)])
    logits = (bits * 2 - 1) * 5 - router.offset
    with torch.no_grad():
        router.codes.copy_(logits)
        weight = torch.zeros(layout.dim, 6)
        weight[:, :n_codes] = logits.T  # predict(one_hot(k)) = code k's logits
        for lin, w in zip(router.predictor, weight.split(router.sizes)):
            lin.weight.copy_(w)
            lin.bias.zero_()
    return router.eval()


def training_rows(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 4, 16, 16, generator=g), {"encoder_hidden_states": torch.randn(n, 5, 8, generator=g)},
            torch.eye(6)[torch.arange(n) % 3])  # prompt i routes to code i % 3


def run_shared(base, router, steps=3):
    from diffusers import DDPMScheduler

    data, cond, emb = training_rows()
    shared = copy.deepcopy(base)
    finetune_shared(shared, router, base, DDPMScheduler(num_train_timesteps=1000), data, cond, emb, steps=steps,
                    batch_size=8, lr=2e-3, seed=0, log_every=1)
    return shared, router.route(emb)


def test_shared_finetune_then_export_gives_experts_equal_to_the_gated_model():
    base = tiny_unet()
    lay = discover(base)
    router = fixed_router(lay, 3)
    shared, routed = run_shared(base, router)
    assert len(set(routed.tolist())) >= 2  # the fine-tune saw several codes
    experts, before = experts_from(router, shared), experts_from(router, base)
    gates = router.code_gates()
    x, t, e = inputs()
    gated = RoutedGatedUNet(shared, lay, gates)
    with torch.no_grad():
        moved = False
        for k, expert in enumerate(experts):
            code = torch.full((3,), k)
            ref = gated(x, t, e, code=code)[0]
            assert torch.allclose(expert(x, t, e).sample, ref, atol=1e-5)
            moved |= not torch.allclose(before[k](x, t, e).sample, ref, atol=1e-4)
        mixed = gated(x, t, e, code=torch.tensor([0, 1, 2]))[0]  # one code per sample in one batch
        for i in range(3):
            assert torch.allclose(experts[i](x[i : i + 1], t[i : i + 1], e[i : i + 1]).sample, mixed[i : i + 1], atol=1e-5)
    gated.remove()
    assert moved  # the fine-tune changed the experts
    # a ResNet channel group closed in every code gets no gradient; groups open in some code learn
    open_any = gates.amax(0)
    changed, frozen = 0, 0
    for g in lay.width:
        if g.kind != "resnet":
            continue
        w0, w1 = base.get_submodule(g.module).conv1.weight, shared.get_submodule(g.module).conv1.weight
        for u in range(g.size):
            rows = slice(u * g.unit, (u + 1) * g.unit)
            same = torch.equal(w0[rows], w1[rows])
            if open_any[g.offset + u] == 0:
                assert same, (g.name, u)
                frozen += 1
            changed += not same
    assert changed > 0 and frozen > 0


def test_one_code_shared_finetune_equals_finetuning_the_sliced_static_model():
    from diffusers import DDPMScheduler

    from prunekit_diffusion.recovery import distill_finetune

    base = tiny_unet()
    router = fixed_router(discover(base), 1, seed=4)
    shared, routed = run_shared(base, router)
    assert routed.eq(0).all()
    via_shared = experts_from(router, shared)[0]
    start = experts_from(router, base)[0]
    static = copy.deepcopy(start).requires_grad_(True)
    data, cond, _ = training_rows()
    distill_finetune(static, base, DDPMScheduler(num_train_timesteps=1000), data, cond, steps=3, batch_size=8,
                     lr=2e-3, seed=0, log_every=1)
    x, t, e = inputs()
    with torch.no_grad():
        a, b, s = via_shared(x, t, e).sample, static(x, t, e).sample, start(x, t, e).sample
    # same data, noise, steps and optimiser: equal up to float summation order
    assert (b - s).abs().max() > 0.1 and (a - b).abs().max() < 1e-4
