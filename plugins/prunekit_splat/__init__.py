"""prunekit_splat: pruning Gaussian-splatting primitives (SUNDAE, RadSplat, LightGaussian,
opacity and random baselines), scene IO, cameras, and a PyTorch reference renderer."""
