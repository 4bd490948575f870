"""Plugin spec of prunekit_hashgrid (entry point ``hollownerf`` in ``prunekit.plugins``). No torch at import."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit import Plugin


@dataclass
class HollowConfig:
    """HollowNeRF takes no scoring options: the scores are the trained saliency logits."""


HOLLOWNERF = Plugin(
    name="hollownerf", domain="hashgrid", config=HollowConfig,
    description="HollowNeRF: keep the hash-grid cells of the trained saliency grid; free hash entries only pruned cells reach",
    paper="Xie et al., HollowNeRF: Pruning Hashgrid-Based NeRFs with Trainable Collision Mitigation, ICCV 2023",
    scorer="prunekit_hashgrid.target:saliency_scores", target="prunekit_hashgrid.target:HASHGRID_FILES",
    hooks={"nerfstudio": "prunekit_hashgrid.nerfstudio.methods:NERFACTO_HOLLOW"},
    requires=("torch", "safetensors"), extra="hashgrid")
