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
