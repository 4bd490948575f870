import pytest
import torch

from prunekit_voxel.model import Tsp3dNet
from prunekit_voxel.voxelize import voxelize


@pytest.fixture(autouse=True)
def _one_thread():
    """Small sparse ops are dominated by OpenMP start-up; on a loaded 2-core machine two threads
    spin against each other (100x slower measured). Run these tests single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_sites(n: int, extent: int, seed: int = 0, lo: int = 0) -> torch.Tensor:
    """``n`` unique random integer coordinates in [lo, lo + extent)^3."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(extent**3, generator=g)[:n]
    return torch.stack([flat // (extent * extent), (flat // extent) % extent, flat % extent], 1) + lo


def small_scene():
    """About a thousand 10 cm voxels of random points in a 2.4 x 2.4 x 0.8 m box (rgb + occupancy)."""
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(1200, 3, generator=g) * torch.tensor([2.4, 2.4, 0.8])
    rgb = torch.rand(1200, 3, generator=g)
    vox, _ = voxelize(pts.numpy(), 0.1, torch.cat([rgb, torch.ones(1200, 1)], 1).numpy())
    return vox


def small_net():
    """A tiny Tsp3dNet (d=16, 24-d text) in eval mode, seeded."""
    torch.manual_seed(0)
    return Tsp3dNet(cin=4, d=16, text_dim=24, heads=2, layers=1, max_keys=256, cba_candidates=200).eval()
