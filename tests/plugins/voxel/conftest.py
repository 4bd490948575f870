import torch


def random_sites(n: int, extent: int, seed: int = 0, lo: int = 0) -> torch.Tensor:
    """``n`` unique random integer coordinates in [lo, lo + extent)^3."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(extent**3, generator=g)[:n]
    return torch.stack([flat // (extent * extent), (flat // extent) % extent, flat % extent], 1) + lo
