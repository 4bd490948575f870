"""Checkpoint round trip (safetensors, no pickle) and box IoU."""

import pytest
import torch
from prunekit import InputError

from prunekit_voxel.checkpoint import load_checkpoint, save_checkpoint
from prunekit_voxel.metrics import accuracy_at, box_iou

from .conftest import small_net, small_scene

ARCH = dict(cin=4, d=16, text_dim=24, heads=2, layers=1, max_keys=256, cba_candidates=200)


def test_checkpoint_roundtrip_gives_the_same_outputs(tmp_path):
    net, vox = small_net(), small_scene()
    save_checkpoint(net, tmp_path / "a.safetensors", ARCH, 0.1, steps=3)
    net2, vs, info = load_checkpoint(tmp_path / "a.safetensors")
    assert vs == 0.1 and info == {"steps": 3}
    text = torch.randn(4, 24)
    with torch.no_grad():
        torch.testing.assert_close(net2(vox, text, voxel_size=vs)["box"], net(vox, text, voxel_size=vs)["box"])


def test_bad_checkpoints(tmp_path):
    with pytest.raises(InputError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="unreadable"):
        load_checkpoint(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="not a TSP3D checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_box_iou_and_accuracy():
    a = [0, 0, 0, 2, 2, 2]
    assert box_iou(a, a) == 1.0
    assert box_iou(a, [1, 0, 0, 2, 2, 2]) == pytest.approx(4 / 12)  # half overlap: 4 / (8 + 8 - 4)
    assert box_iou(a, [5, 0, 0, 2, 2, 2]) == 0.0
    assert accuracy_at([0.1, 0.3, 0.6], 0.25) == pytest.approx(2 / 3) and accuracy_at([0.1, 0.3, 0.6], 0.5) == pytest.approx(1 / 3)
