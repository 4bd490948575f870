"""prunekit_hashgrid: HollowNeRF saliency-masked hash-grid sparsification.

Xie et al., "HollowNeRF: Pruning Hashgrid-Based NeRFs with Trainable Collision
Mitigation", ICCV 2023. There is no public code; this package is a reconstruction from
the paper (see README.md in this folder for what is approximated).

Modules (import what you use; this file imports nothing heavy):

- ``encoding``   multiresolution hash encoding, nerfstudio ``HashEncoding`` torch layout
- ``saliency``   the coarse 3-D saliency grid (a core gate) and its ADMM budget
- ``field``      tiny NeRF field: hash grid -> density MLP -> colour MLP
- ``render``     rays, stratified sampling, volume rendering, cell skipping
- ``occupancy``  nerfacc-style occupancy-grid culling (the baseline)
- ``data``       synthetic scene and instant-ngp ``transforms.json`` loader (fox)
- ``train``      the standalone trainer
- ``compact``    post-training compaction of the hash table
- ``checkpoint`` safetensors checkpoints
- ``target``     the ``prunekit prune`` file target; ``plugins`` the plugin spec
- ``nerfstudio`` the ``nerfacto-hollow`` method (needs nerfstudio)
"""
