import torch

from prunekit.gates import AugmentedLagrangian, HardConcrete, sigmoid_gate, straight_through_gate


def test_sigmoid_gate_temperature():
    x = torch.tensor([1.0])
    assert torch.allclose(sigmoid_gate(x, 0.5), torch.sigmoid(torch.tensor([2.0])))


def test_straight_through_is_hard_forward_and_passes_gradient():
    logits = torch.tensor([-2.0, 0.5, 3.0], requires_grad=True)
    g = straight_through_gate(logits)
    assert g.tolist() == [0.0, 1.0, 1.0]
    (g * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    s = torch.sigmoid(logits.detach())
    assert torch.allclose(logits.grad, torch.tensor([1.0, 2.0, 3.0]) * s * (1 - s))
    assert (logits.grad != 0).all()


def test_hard_concrete_samples_in_unit_interval_with_exact_zeros_and_ones():
    torch.manual_seed(0)
    hc = HardConcrete(2000, init_keep=0.5)
    z = hc()
    assert z.min() >= 0 and z.max() <= 1
    assert (z == 0).any() and (z == 1).any()
    z.sum().backward()
    assert hc.log_alpha.grad is not None and hc.log_alpha.grad.abs().sum() > 0
    l0 = hc.expected_l0()
    assert ((l0 > 0) & (l0 < 1)).all()
    hc.eval()
    assert torch.equal(hc(), hc())


def test_augmented_lagrangian_drives_gates_to_budget():
    """A task loss that wants every gate open; the enforcer pulls mean density to 0.25."""
    torch.manual_seed(0)
    logits = torch.nn.Parameter(torch.randn(64))
    importance = torch.linspace(0.1, 1.0, 64)
    enforcer = AugmentedLagrangian(target=0.25, rho=5.0, eta=1.0)
    opt = torch.optim.Adam([logits], lr=0.05)
    for _ in range(1500):
        m = torch.sigmoid(logits)
        task = -(importance * m).mean()
        density = m.mean()
        loss = task + enforcer.penalty(density)
        opt.zero_grad()
        loss.backward()
        opt.step()
        enforcer.update(density.detach())
    density = float(torch.sigmoid(logits.detach()).mean())
    assert abs(density - 0.25) < 0.03, density
    assert enforcer.lam > 0
    # the most important units stay open, the least important close
    m = torch.sigmoid(logits.detach())
    assert m[-8:].mean() > 0.8 and m[:8].mean() < 0.2


def test_augmented_lagrangian_state_round_trip():
    a = AugmentedLagrangian(0.1)
    a.update(0.5)
    b = AugmentedLagrangian(0.9)
    b.load_state_dict(a.state_dict())
    assert b.lam == a.lam and b.target == 0.1
