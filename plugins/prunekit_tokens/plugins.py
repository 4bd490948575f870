"""Plugin spec for Token Cropr (imports only prunekit; heavy code is referenced by name)."""

from __future__ import annotations

from prunekit import Plugin

from .config import CroprConfig

TOKEN_CROPR = Plugin(
    name="token-cropr",
    domain="vit-tokens",
    description="Token Cropr: learned cross-attention token pruning between ViT blocks (transformers, timm)",
    config=CroprConfig,
    paper="Bergner et al., Token Cropr: Faster ViTs for Quite a Few Tasks, CVPR 2025 (arXiv 2412.00965)",
    hooks={
        "transformers": "prunekit_tokens.attach:attach_cropr",
        "timm": "prunekit_tokens.attach:attach_cropr",
        "random": "prunekit_tokens.attach:attach_random",
        "merge": "prunekit_tokens.attach:attach_merge",
        "load": "prunekit_tokens.persist:load_pretrained",
    },
    requires=("torch", "transformers"),
    extra="tokens",
)
