"""Shared fixtures: one tiny HollowNeRF trained once per session on the synthetic scene."""

import pytest
import torch

TINY_GRID = dict(num_levels=4, min_res=8, max_res=48, log2_hashmap_size=11, features_per_level=2)


@pytest.fixture(scope="session")
def tiny_views():
    from prunekit_hashgrid.data import split, synthetic_views

    return split(synthetic_views(n_views=16, res=16))


@pytest.fixture(scope="session")
def tiny_hollow(tiny_views):
    """A HollowNeRF trained 120 steps (16^3 saliency cells, target 25 % of cells)."""
    from prunekit_hashgrid.train import TrainConfig, train

    torch.set_num_threads(1)
    cfg = TrainConfig(mode="hollow", steps=120, batch_rays=192, samples=16, grid=TINY_GRID, hidden=32,
                      saliency_res=16, saliency_target=0.25, budget_start=0.1, budget_end=0.6, freeze_from=0.8)
    return train(tiny_views[0], cfg)


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_hollow, tmp_path_factory):
    from prunekit_hashgrid import checkpoint

    path = tmp_path_factory.mktemp("hg") / "hollow.safetensors"
    checkpoint.save(tiny_hollow.field, path, {"test": True})
    return path
