import pytest
import torch
import torch.nn.functional as F

from prunekit_federated.masks import prunable_shapes, random_mask
from prunekit_federated.models import SmallCNN
from prunekit_federated.sap import ActivationMeter, activation_keep_mask, pack_bits, sap_conv2d, sap_linear, unpack_bits


def test_bit_packing_roundtrip():
    m = torch.rand(1001, generator=torch.Generator().manual_seed(0)) < 0.3
    p = pack_bits(m)
    assert p.dtype == torch.uint8 and p.numel() == 126
    assert torch.equal(unpack_bits(p, 1001), m)


def test_activation_keep_mask_keeps_largest():
    x = torch.tensor([[0.1, -3.0, 0.5, 2.0]])
    assert activation_keep_mask(x, 0.5).tolist() == [[False, True, False, True]]


def _grads(fn, x, w, b):
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    out = fn(x, w, b)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad, w.grad, b.grad


def test_sap_conv_gradients():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 3, 6, 6, generator=g), torch.randn(4, 3, 3, 3, generator=g), torch.randn(4, generator=g)
    ref = _grads(lambda x, w, b: F.conv2d(x, w, b, 1, 1), x, w, b)
    full = _grads(lambda x, w, b: sap_conv2d(x, w, b, (1, 1), (1, 1), 1.0), x, w, b)
    for a, r in zip(full, ref):
        assert torch.allclose(a, r, atol=1e-5)
    half = _grads(lambda x, w, b: sap_conv2d(x, w, b, (1, 1), (1, 1), 0.5), x, w, b)
    assert torch.allclose(half[0], ref[0], atol=1e-5)  # forward unchanged
    assert torch.allclose(half[1], ref[1], atol=1e-5)  # input gradient exact
    assert torch.allclose(half[3], ref[3], atol=1e-5)
    xp = x * activation_keep_mask(x, 0.5)  # weight gradient = that of the pruned activation
    wp = _grads(lambda x_, w, b: F.conv2d(xp, w, b, 1, 1), x, w, b)[2]
    assert torch.allclose(half[2], wp, atol=1e-5)
    assert not torch.allclose(half[2], ref[2], atol=1e-3)


def test_sap_linear_gradients():
    g = torch.Generator().manual_seed(1)
    x, w, b = torch.randn(5, 7, generator=g), torch.randn(3, 7, generator=g), torch.randn(3, generator=g)
    ref = _grads(F.linear, x, w, b)
    half = _grads(lambda x, w, b: sap_linear(x, w, b, 0.5), x, w, b)
    assert torch.allclose(half[1], ref[1], atol=1e-5)
    xp = x * activation_keep_mask(x, 0.5)
    assert torch.allclose(half[2], _grads(lambda x_, w, b: F.linear(xp, w, b), x, w, b)[2], atol=1e-5)
    assert not torch.allclose(half[2], ref[2], atol=1e-3)


def test_activation_memory_is_measured_and_reduced():
    x = torch.randn(16, 1, 28, 28)

    def measure(model):
        model.train()
        with ActivationMeter(model) as meter:
            loss = F.cross_entropy(model(x), torch.zeros(16, dtype=torch.long))
        loss.backward()
        return meter.bytes

    torch.manual_seed(0)
    bn = measure(SmallCNN(norm="bn"))
    torch.manual_seed(0)
    ns = measure(SmallCNN(norm="nsconv"))
    torch.manual_seed(0)
    ns_sap = measure(SmallCNN(norm="nsconv", act_keep=0.5))
    # the conv2 input alone (16 x 16 x 14 x 14 float32) is saved by every variant
    assert bn > 16 * 16 * 14 * 14 * 4
    assert ns < bn  # no BN inputs to keep
    assert ns_sap < ns  # half the conv/linear inputs, plus 1 bit per element


def test_nsconv_keeps_pruned_weights_at_zero():
    torch.manual_seed(0)
    model = SmallCNN(norm="nsconv")
    mask = random_mask(prunable_shapes(model), 0.2, seed=0)
    model.set_masks(mask)
    w = model.conv2.effective_weight().detach().flatten()
    assert torch.count_nonzero(w[~mask["conv2.weight"]]) == 0
    kept = w.view(32, -1)[mask["conv2.weight"].view(32, -1)]
    assert torch.isfinite(kept).all() and kept.abs().sum() > 0
    out = model(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_step_peak_heap_is_measured():
    from prunekit_federated.sap import heap_in_use

    if heap_in_use() is None:
        pytest.skip("glibc mallinfo2 unavailable")

    def peak(batch):
        torch.manual_seed(0)
        model = SmallCNN(norm="bn")
        model.train()
        x = torch.randn(batch, 1, 28, 28)
        with ActivationMeter(model) as meter:
            loss = F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long))
        loss.backward()
        meter.sample()
        return meter.peak_heap_bytes, meter.bytes

    p16, a16 = peak(16)
    p64, a64 = peak(64)
    assert p16 >= 0.9 * a16  # the saved activations are on the heap at the end of forward
    assert p64 > 3 * p16 and a64 > 3.5 * a16  # both scale with the batch
