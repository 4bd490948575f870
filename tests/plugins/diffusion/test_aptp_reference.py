"""APTP options of the reference recipe: router LR warm-up (``AptpConfig.lr_warmup``; the reference's
``constant_with_warmup``, 100 steps) and sampled deployed gates (``AptpRouter.eval_noise_seed``)."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from prunekit_diffusion.aptp.gating import discover  # noqa: E402
from prunekit_diffusion.aptp.router import AptpRouter  # noqa: E402
from prunekit_diffusion.aptp.train import AptpConfig, lr_factor, train_router  # noqa: E402

from .test_aptp import tiny_unet  # noqa: E402


def test_lr_factor_is_linear_then_constant():
    assert [lr_factor(s, 4) for s in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert lr_factor(0, 0) == 1.0 and lr_factor(7, 0) == 1.0


def _codes_after(steps, **kw):
    from diffusers import DDPMScheduler

    g = torch.Generator().manual_seed(0)
    data = {"images": torch.randn(8, 4, 16, 16, generator=g), "encoder_hidden_states": torch.randn(8, 5, 8, generator=g),
            "prompt_emb": torch.randn(8, 6, generator=g)}
    cfg = AptpConfig(n_codes=2, steps=steps, batch=8, warmup=0.0, log_every=100, **kw)
    router, _, _ = train_router(tiny_unet(), DDPMScheduler(num_train_timesteps=1000), lambda s: data, cfg)
    return router.codes.detach()


def test_warmup_is_wired_into_the_training_loop():
    """Step 0 of a warm-up runs at LR 0 (codes = their init, as with lr=0); without warm-up step 0 moves them;
    the warm-up's second step (LR lr/2) moves them less than a full-LR step would."""
    init = _codes_after(1, lr=0.0)
    assert torch.equal(_codes_after(1, lr=0.2, lr_warmup=10), init)
    assert not torch.equal(_codes_after(1, lr=0.2), init)
    half = (_codes_after(2, lr=0.2, lr_warmup=2) - init).abs().max()
    full = (_codes_after(2, lr=0.2) - init).abs().max()
    assert 0 < half < 0.12 < full  # one Adam step moves a parameter by about its LR at most: 0.2 / 2 here


def test_eval_noise_seed_deploys_one_fixed_sample_of_the_gates(tmp_path):
    """Logits all at -2.2 (offset 3): noise-free every gate is open; with a seed about sigmoid(0.8) = 69 % are,
    the same sample on every call, per code its own, and a prompt's route does not depend on its batch."""
    from prunekit_diffusion.aptp.bundle import load_bundle, save_router
    from prunekit_diffusion.aptp.gating import gated_macs

    from .conftest import load_script
    from .test_aptp import inputs

    unet = tiny_unet()
    layout = discover(unet)
    router = AptpRouter(layout, emb_dim=6, n_codes=3).eval()
    with torch.no_grad():
        router.codes.fill_(-2.2)
    assert router.code_gates().min() == 1.0
    router.eval_noise_seed = 5
    gates = router.code_gates()
    assert torch.equal(gates, router.code_gates()) and not torch.equal(gates[0], gates[1])
    assert 0.55 < gates.mean().item() < 0.85, gates.mean()
    emb = torch.randn(10, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(router.route(emb)[3:6], router.route(emb[3:6]))
    x, t, e = inputs(1)
    macs = gated_macs(unet, layout, x, t, e)
    save_router(tmp_path, router, macs)
    again = load_bundle(tmp_path, unet).router
    assert again.eval_noise_seed == 5 and torch.equal(again.code_gates(), gates)
    router.train()
    assert router.fixed_noise(3, 1) is None  # training keeps fresh noise per step
    nf = load_script("bench/bench_aptp.py").noise_free(router, macs, emb)  # the bench's noise-free record
    assert nf["code_mac_ratio"] == [1.0] * 3 and nf["share"] == [1.0, 0.0, 0.0]
    assert nf["code_logit_frac_closed"] == [0.0] * 3
    assert router.eval_noise_seed == 5 and not router.training
