"""Cluttered-MNIST canvases, idx reading, training loops and metrics."""

import gzip

import numpy as np
import pytest
import torch

from prunekit.errors import InputError
from prunekit_tokens.attach import attach_cropr
from prunekit_tokens.cluttered_mnist import CanvasSpec, _read_idx, load_mnist, make_canvases, mnist_root, split
from prunekit_tokens.tasks import ClassificationTask, MaskTask, confusion, iou_from_confusion
from prunekit_tokens.training import batches, evaluate_mask, train_epoch


def _fake_digits(n=6):
    d = np.zeros((n, 28, 28), np.float32)
    d[:, 8:20, 12:16] = 1.0
    return d, np.arange(n) % 10


def test_canvases_shapes_masks_and_determinism():
    digits, labels = _fake_digits()
    spec = CanvasSpec(size=48, clutter=3, frag=10, noise=0.05)
    x, y, m = make_canvases(digits, labels, spec, seed=7)
    assert x.shape == (6, 1, 48, 48) and m.shape == (6, 48, 48) and y.tolist() == labels.tolist()
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert (m.sum((1, 2)) == 12 * 4).all()  # the whole bar, wherever it landed
    assert (x[:, 0][m] > 0.8).all()
    x2, _, m2 = make_canvases(digits, labels, spec, seed=7)
    assert np.array_equal(x, x2) and np.array_equal(m, m2)
    x3, _, _ = make_canvases(digits, labels, spec, seed=8)
    assert not np.array_equal(x, x3)


def test_digit_scale_and_too_small_canvas():
    digits, labels = _fake_digits(2)
    x, _, m = make_canvases(digits, labels, CanvasSpec(size=64, clutter=0, noise=0.0, digit_scale=2), seed=0)
    assert m.sum() > 2 * 12 * 4 * 3  # about four times the area
    with pytest.raises(ValueError, match="smaller than"):
        make_canvases(digits, labels, CanvasSpec(size=40, digit_scale=2), seed=0)


def test_split_is_disjoint_and_fixed():
    tr, te = split()
    assert len(tr) == 8000 and len(te) == 2000 and not set(tr) & set(te)
    assert np.array_equal(split()[1], te)


def test_bad_idx_file(tmp_path):
    p = tmp_path / "bad.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(InputError, match="expected 5 data bytes"):
        _read_idx(p, 2049)
    p.write_bytes(b"not gzip")
    with pytest.raises(InputError, match="bad.gz"):
        _read_idx(p, 2049)
    with pytest.raises(InputError, match="no such file"):
        load_mnist(tmp_path)


@pytest.mark.skipif(not (mnist_root() / "t10k-labels-idx1-ubyte.gz").exists(), reason="MNIST data absent")
def test_real_mnist_loads():
    images, labels = load_mnist()
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert set(np.unique(labels)) == set(range(10)) and 0.0 <= images.min() and images.max() == 1.0


def _data(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_frozen_training_moves_only_cropr(vit_cls):
    red = attach_cropr(vit_cls, prune_count=3, aux_out=10).train()
    vit_cls.requires_grad_(False)
    before_model = {k: v.clone() for k, v in vit_cls.state_dict().items()}
    before_red = {k: v.clone() for k, v in red.state_dict().items()}
    x, y = _data()
    opt = torch.optim.AdamW(red.parameters(), 1e-2)
    stats = train_epoch(lambda xb: vit_cls(pixel_values=xb).logits, list(red.parameters()),
                        batches(x.numpy(), y.numpy(), 4), ClassificationTask(10), opt, red, "frozen")
    assert stats["aux_loss"] > 0 and stats["main_loss"] == 0
    assert all(torch.equal(v, vit_cls.state_dict()[k]) for k, v in before_model.items())
    assert any(not torch.equal(v, red.state_dict()[k]) for k, v in before_red.items())


def test_joint_training_moves_backbone(vit_cls):
    red = attach_cropr(vit_cls, prune_count=3, aux_out=10).train()
    vit_cls.train()
    w = vit_cls.classifier.weight.clone()
    params = list(vit_cls.parameters()) + list(red.parameters())
    x, y = _data()
    stats = train_epoch(lambda xb: vit_cls(pixel_values=xb).logits, params, batches(x.numpy(), y.numpy(), 4),
                        ClassificationTask(10), torch.optim.AdamW(params, 1e-2), red, "joint")
    assert stats["main_loss"] > 0 and stats["aux_loss"] > 0
    assert not torch.equal(w, vit_cls.classifier.weight)


def test_mask_task_pixels_and_iou():
    task = MaskTask(2, (2, 3), 4)
    tok = torch.zeros(1, 6, 4 * 4 * 2)
    tok.view(1, 2, 3, 4, 4, 2)[0, 1, 2, :, :, 1] = 5.0  # bottom-right patch says "digit"
    pix = task.to_pixels(tok)
    assert pix.shape == (1, 2, 8, 12)
    pred = pix.argmax(1)
    assert pred[0, 4:, 8:].all() and pred.sum() == 16
    conf = confusion(pred, torch.zeros_like(pred), 2)
    assert conf.tolist() == [[80, 16], [0, 0]]
    iou = iou_from_confusion(torch.tensor([[8, 2], [1, 4]]))
    assert torch.allclose(iou, torch.tensor([8 / 11, 4 / 7], dtype=torch.float64))
    res = evaluate_mask(lambda xb: pix, [(None, torch.ones(1, 8, 12, dtype=torch.long))], 2)
    assert res["iou"] == [0.0, 16 / 96]


def test_mask_aux_grid_regions():
    task = MaskTask(2, (2, 3), 4, aux_grid=(2, 1))
    assert task.num_queries == 2 and task.aux_cell == (4, 12) and task.aux_out == 4 * 12 * 2
    aux = torch.zeros(1, 2, task.aux_out)
    aux.view(1, 2, 4, 12, 2)[0, 1, :, :, 1] = 1.0  # query 1 = bottom half says "digit"
    pred = task.aux_to_pixels(aux).argmax(1)[0]
    assert pred[4:].all() and not pred[:4].any()
    assert task.aux_loss(aux, pred.unsqueeze(0)) < task.aux_loss(aux, 1 - pred.unsqueeze(0))
    with pytest.raises(ValueError, match="does not divide"):
        MaskTask(2, (2, 3), 4, aux_grid=(3, 1))
