"""prunekit_tokens: learned token pruning for Vision Transformers (Token Cropr).

Token Cropr (Bergner, Lippert, Mahendran, "Token Cropr: Faster ViTs for Quite a Few
Tasks", CVPR 2025, arXiv 2412.00965) adds small cross-attention scorers between ViT
blocks; each drops a fixed number of tokens per image. Baselines at the same token
budget: random pruning and ToMe-style bipartite merging (Bolya et al., ICLR 2023).

This package file imports nothing heavy; the torch code lives in submodules:

- :mod:`.attach` — ``attach_cropr`` / ``attach_random`` / ``attach_merge`` on a
  transformers ``ViTModel`` / ``ViTForImageClassification`` / DeiT model (v4 and v5
  layouts) or a timm ``VisionTransformer``, through forward hooks.
- :mod:`.modules` — the Cropr scorer / aggregator / auxiliary head.
- :mod:`.persist` — ``save_pretrained`` / ``load_pretrained``.
- :mod:`.training` — auxiliary-head training (frozen backbone or joint).
- :mod:`.cluttered_mnist` — the cluttered-MNIST classification and mask tasks.
"""
