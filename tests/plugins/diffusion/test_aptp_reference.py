"""APTP router LR warm-up (``AptpConfig.lr_warmup``; the reference's ``constant_with_warmup``, 100 steps)."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

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
