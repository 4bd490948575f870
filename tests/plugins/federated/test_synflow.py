import pytest
import torch

from prunekit import Mask
from prunekit_federated.models import SmallCNN
from prunekit_federated.synflow import synflow_mask, synflow_scores


def test_synflow_conserves_flow_per_layer():
    # SynFlow scores of a positive linear chain sum to R in every layer (Tanaka et al., Thm 2)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False), torch.nn.ReLU(), torch.nn.Linear(5, 3, bias=False))
    mask = Mask.full({"0.weight": 30, "2.weight": 15})
    s = synflow_scores(net, mask, (6,))
    r = net.double()
    with torch.no_grad():
        for p in r.parameters():
            p.abs_()
        total = float(r(torch.ones(1, 6, dtype=torch.float64)).sum())
    assert float(s["0.weight"].sum()) == pytest.approx(total, rel=1e-9)
    assert float(s["2.weight"].sum()) == pytest.approx(total, rel=1e-9)


def test_synflow_mask_density_and_no_layer_collapse():
    torch.manual_seed(0)
    model = SmallCNN(image_size=8)
    mask = synflow_mask(model, 0.05, (1, 8, 8), iterations=20)
    assert mask.kept_fraction == pytest.approx(0.05, abs=0.001)
    assert all(n > 0 for n in mask.kept().values())
    # the model's own weights are untouched
    assert torch.count_nonzero(model.fc1.weight) == model.fc1.weight.numel()


def test_iterative_differs_from_one_shot():
    torch.manual_seed(0)
    model = SmallCNN(image_size=8)
    assert not (synflow_mask(model, 0.02, (1, 8, 8), iterations=1) == synflow_mask(model, 0.02, (1, 8, 8), iterations=20))


def test_frozen_weights_keep_the_dense_preactivation_scale():
    # edge-popup's scaled init: a unit with a d share of its fan-in, weights / sqrt(d),
    # has the dense layer's pre-activation std; the unscaled masked weights have sqrt(d) of it
    from prunekit_federated.training import frozen_weights

    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 2000, generator=g) / 2000 ** 0.5
    mask = Mask({"w": torch.rand(w.numel(), generator=g) < 0.1})
    x = torch.randn(512, 2000, generator=g)
    dense_std = float((x @ w.T).std())
    scaled = frozen_weights({"w": w}, mask)["w"].view_as(w)
    plain = frozen_weights({"w": w}, mask, scale="none")["w"].view_as(w)
    assert float((x @ scaled.T).std()) == pytest.approx(dense_std, rel=0.1)
    assert float((x @ plain.T).std()) == pytest.approx(dense_std * mask.kept_fraction ** 0.5, rel=0.1)
    assert torch.count_nonzero(scaled) == mask.total_kept  # pruned weights stay exactly zero
    with pytest.raises(ValueError):
        frozen_weights({"w": w}, mask, scale="kaiming")


def test_hidenseek_server_sends_scaled_frozen_weights():
    from prunekit_federated.server_app import build_strategy

    from .conftest import tiny_cfg

    cfg = tiny_cfg("hidenseek")
    torch.manual_seed(cfg.seed)
    init = {k: v.clone() for k, v in SmallCNN(image_size=8).state_dict().items()}
    strategy = build_strategy("hidenseek", cfg)
    for k, m in strategy.mask.groups.items():
        d = float(m.float().mean())
        assert torch.allclose(strategy.base[k], init[k].flatten() * m.float() / d ** 0.5)
    unscaled = build_strategy("hidenseek", tiny_cfg("hidenseek", weight_scale="none"))
    assert all(torch.allclose(unscaled.base[k], init[k].flatten() * m.float()) for k, m in unscaled.mask.groups.items())
