"""APTP ``paper_losses``: the reference code's router terms (no assignment term; L_std / L_max per sample)."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from prunekit_diffusion.aptp.gating import install  # noqa: E402
from prunekit_diffusion.aptp.router import AptpRouter  # noqa: E402
from prunekit_diffusion.aptp.train import AptpConfig, spread_terms, step_losses  # noqa: E402

from .test_aptp import step_setup  # noqa: E402


def test_spread_terms_formula_on_a_tiny_batch():
    r = torch.tensor([0.5, 0.7, 0.6, 0.9], requires_grad=True)
    std, mx = spread_terms(r)
    mean = 0.675
    want = -((sum((v - mean) ** 2 for v in (0.5, 0.7, 0.6, 0.9)) / 3) ** 0.5)  # unbiased, as torch.std
    assert std.item() == pytest.approx(want) and mx.item() == pytest.approx(1 - 0.9)
    mx.backward()
    assert r.grad.tolist() == [0.0, 0.0, 0.0, -1.0]  # L_max pulls only the largest sample up


def _step(paper, n_codes=3, quantise=True):
    """One step's terms on a fixed batch, router and noise; also returns the router."""
    from diffusers import DDPMScheduler

    unet, layout, macs, b = step_setup()
    torch.manual_seed(0)
    router = AptpRouter(layout, 6, n_codes).train()
    ctl = install(unet, layout)
    try:
        torch.manual_seed(1)
        terms, r = step_losses(router, unet, ctl, macs, DDPMScheduler(num_train_timesteps=1000), b,
                               AptpConfig(n_codes=n_codes, paper_losses=paper), quantise=quantise)
    finally:
        ctl.remove()
    return terms, r, router


@pytest.mark.parametrize("quantise", [True, False])
def test_spread_terms_are_over_the_per_sample_ratios_also_in_warmup(quantise):
    terms, r, _ = _step(True, quantise=quantise)
    ratios = terms["mac_ratios"]
    assert ratios.shape == (8,) and "assign" not in terms
    assert terms["std"].item() == pytest.approx(-ratios.std().item())
    assert terms["max"].item() == pytest.approx(1 - ratios.max().item())
    c = AptpConfig()
    total = terms["ddpm"] + c.w_resource * terms["resource"] + c.w_contrastive * terms["contrastive"] \
        + c.w_distill * terms["distill"] + c.w_std * terms["std"] + c.w_max * terms["max"]
    assert terms["loss"].item() == pytest.approx(total.item())  # nothing else (no assignment term) in the loss


def test_after_warmup_predictor_learns_from_contrastive_only_and_codes_get_no_assignment_pull():
    terms, r, router = _step(True)
    assert r["plan"] is not None
    params = [router.codes] + [lin.weight for lin in router.predictor]
    g_loss = torch.autograd.grad(terms["loss"], params, retain_graph=True, allow_unused=True)
    g_con = torch.autograd.grad(AptpConfig().w_contrastive * terms["contrastive"], params, retain_graph=True,
                                allow_unused=True)
    for a, b in zip(g_loss[1:], g_con[1:]):  # predictor: the contrastive gradient and nothing else
        assert b is not None and torch.allclose(a, b, atol=1e-7)
    rest = terms["loss"] - AptpConfig().w_contrastive * terms["contrastive"]
    g_rest = torch.autograd.grad(rest, [router.codes])[0]
    assert g_rest.abs().sum() > 0 and torch.allclose(g_loss[0], g_rest)  # codes: task, resource, spread only
    default, _, drouter = _step(False)  # the default recipe does pull the codes by its assignment term
    assert torch.autograd.grad(default["assign"], [drouter.codes])[0].abs().sum() > 0


@pytest.mark.parametrize("quantise", [True, False])
def test_one_code_static_path_is_unchanged_by_the_flag(quantise):
    (a, _, ra), (b, _, rb) = _step(False, 1, quantise), _step(True, 1, quantise)
    assert a["loss"].item() == b["loss"].item()
    ga = torch.autograd.grad(a["loss"], [ra.codes, ra.predictor[0].weight], allow_unused=True)
    gb = torch.autograd.grad(b["loss"], [rb.codes, rb.predictor[0].weight], allow_unused=True)
    for x, y in zip(ga, gb):
        assert (x is None and y is None) or torch.equal(x, y)
