"""prunekit_diffusion: operator-level pruning of diffusers denoisers (LD-Pruner) and baselines.

Importing this package imports no torch/diffusers; the public API is loaded lazily:

    from prunekit_diffusion import prune_pipeline, save_pruned, load_pruned, Calibration
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Calibration": "sampling",
    "sample_latents": "sampling",
    "discover_operators": "operators",
    "Operator": "operators",
    "count_macs": "macs",
    "bypassed": "bypass",
    "remove_operators": "bypass",
    "ld_pruner_scores": "scoring",
    "random_scores": "scoring",
    "iterative_ld_pruner": "iterative",
    "prune_denoiser": "api",
    "prune_pipeline": "api",
    "PruneResult": "api",
    "make_calibration": "api",
    "magnitude_prune": "magnitude",
    "distill_finetune": "recovery",
    "save_pruned": "serialization",
    "load_pruned": "serialization",
    "ClassConditionalPipeline": "pipeline",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
