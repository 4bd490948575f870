"""APTP prompt-routed pruning (Ganjdanesh et al., ICLR 2025, arXiv 2406.12042) for diffusers UNets.

- :mod:`.gating` — width/depth gates as diffusers ``ModelHook``s, gate layout, per-code MAC model;
- :mod:`.router` — prompt router (predictor, codebook, Gumbel-sigmoid, Sinkhorn), losses;
- :mod:`.train` — router training on a frozen UNet; :mod:`.slicing` — one sliced UNet per code;
- :mod:`.bundle` — save / reload router + experts; :mod:`.pipeline` — ``AptpPipeline``;
- :mod:`.text` — the all-MiniLM-L6-v2 prompt encoder; :mod:`.cli` — ``prunekit aptp ...``.
"""
