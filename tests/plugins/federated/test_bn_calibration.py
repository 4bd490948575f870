"""HideNseek BN re-estimation under the voted signs (Flower evaluate phase), in-process."""

import copy

import pytest
import torch

from .conftest import LocalGrid, tiny_cfg
from prunekit_federated.client_app import _corrupt, make_client_app
from prunekit_federated.data import client_data
from prunekit_federated.server_app import build_strategy
from prunekit_federated.training import bn_stat_names, bn_statistics, pool_bn_statistics


def test_pooled_statistics_are_those_of_the_union():
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, 3, generator=g) * s + m for n, s, m in ((5, 1.0, 0.0), (20, 2.0, 3.0), (9, 0.5, -1.0))]
    parts = [(float(len(c)), {"bn.running_mean": c.mean(0), "bn.running_var": c.var(0, unbiased=False)})
             for c in chunks]
    pooled = pool_bn_statistics(parts)
    union = torch.cat(chunks)
    assert torch.allclose(pooled["bn.running_mean"], union.mean(0), atol=1e-5)
    assert torch.allclose(pooled["bn.running_var"], union.var(0, unbiased=False), atol=1e-4)
    naive = sum(n * p["bn.running_var"] for n, p in parts) / len(union)
    assert (pooled["bn.running_var"] > naive + 0.5).all()  # the clients' means differ: between-client spread


def _strategy(nodes=3, **kw):
    cfg = tiny_cfg("hidenseek", clients=nodes, **kw)
    strategy = build_strategy("hidenseek", cfg)
    return cfg, strategy


def test_global_bn_statistics_are_re_estimated_under_the_voted_signs():
    cfg, strategy = _strategy()
    grid = LocalGrid(make_client_app(), 3)
    from prunekit_federated.data import server_test_data

    strategy.test_data = server_test_data(cfg.dataset, cfg.data_dir, cfg.test_fraction, cfg.seed)
    strategy.run(grid, 2)
    stages = [st for _, st in grid.log]
    assert stages == (["train"] * 3 + ["bn-calibrate"] * 3) * 2
    h = strategy.history[2]
    assert h["bn_calibration"]["accepted"] == 3 and h["bn_calibration"]["up_bytes"] > 0
    assert h["up_bytes"] > h["bn_calibration"]["up_bytes"]  # counted in the round's upload
    assert 0.0 <= h["accuracy_before_calibration"] <= 1.0 and 0.0 <= h["accuracy"] <= 1.0
    # the global statistics are exactly the pooled statistics of the final voted model on the nodes' data
    model = copy.deepcopy(strategy.global_model())
    parts = []
    for i in range(3):
        data = client_data(cfg.dataset, cfg.data_dir, i, 3, cfg.dirichlet_alpha, cfg.test_fraction, cfg.seed)
        data = data.subset(torch.arange(min(len(data), cfg.client_samples)).numpy())
        parts.append((float(len(data)), bn_statistics(model, data)))
    want = pool_bn_statistics(parts)
    for k in bn_stat_names(model):
        assert torch.allclose(strategy.state[k], want[k], atol=1e-5), k


def test_calibration_off_sends_no_evaluate_messages():
    _, strategy = _strategy(bn_calibration=False)
    grid = LocalGrid(make_client_app(), 3)
    strategy.run(grid, 1)
    assert [st for _, st in grid.log] == ["train"] * 3
    assert "bn_calibration" not in strategy.history[1]


class _NanStats:
    """A client app whose BN statistics from one node carry a NaN."""

    def __init__(self, app, node):
        self.app, self.node = app, node

    def __call__(self, msg, context):
        from flwr.app import Message, RecordDict

        reply = self.app(msg, context)
        if context.node_id == self.node and str(msg.content["config"]["stage"]) == "bn-calibrate":
            arrays = _corrupt(reply.content["arrays"], "nan")
            return Message(RecordDict({"arrays": arrays, "metrics": reply.content["metrics"]}), reply_to=msg)
        return reply


def test_malformed_statistics_are_rejected_and_the_rest_pooled():
    _, strategy = _strategy()
    grid = LocalGrid(_NanStats(make_client_app(), 102), 3)
    strategy.run(grid, 1)
    cal = strategy.history[1]["bn_calibration"]
    assert cal["rejected"] == [102] and cal["accepted"] == 2
    assert any("bn-calibrate" in r["reason"] and r["node"] == 102 for r in strategy.history[1]["rejected"])
    assert all(torch.isfinite(strategy.state[k]).all() for k in bn_stat_names(strategy.model))


@pytest.mark.parametrize("lost", ["hns-base"])
def test_node_without_cached_weights_is_skipped(lost):
    _, strategy = _strategy()
    grid = LocalGrid(make_client_app(), 2)
    orig = strategy.aggregate_train

    def wrapped(r, replies):
        out = orig(r, replies)
        del grid.contexts[101].state[lost]  # e.g. a SuperNode restart between train and calibrate
        return out
    strategy.aggregate_train = wrapped
    strategy.run(grid, 1)
    cal = strategy.history[1]["bn_calibration"]
    assert cal["accepted"] == 1 and cal["rejected"] == []
    assert 101 not in strategy.has_base  # re-sent with the next training message
