import pytest
import torch


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
