"""Quality meter helpers: idx reader, Fréchet distance, the real MNIST files."""

import gzip
import struct

import numpy as np
import pytest
import torch
from ...shared_data import DATA

MNIST = DATA / "mnist"


def test_frechet_distance_closed_forms():
    from prunekit_diffusion.quality import frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # shifted copy: only the mean term, ||d||^2
    assert frechet_distance(a, a + torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)) == pytest.approx(5.0, rel=1e-9)
    # scaled copy: covariances S and c^2 S give Tr(S)(1 - c)^2
    s = torch.trace(torch.cov(a.T)).item()
    assert frechet_distance(a, 3 * a) == pytest.approx(s * 4 + 4 * a.mean(0).pow(2).sum().item(), rel=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a[:1], a)


def test_read_idx_roundtrip(tmp_path):
    from prunekit_diffusion.quality import read_idx

    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 2, 3, 4) + arr.tobytes()
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "bad").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="header"):
        read_idx(tmp_path / "bad")


@pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="real MNIST not available")
def test_real_mnist_loads():
    from prunekit_diffusion.quality import load_mnist

    x, y = load_mnist(MNIST, size=32)
    assert x.shape == (10000, 1, 32, 32) and y.shape == (10000,)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    small, _ = load_mnist(MNIST, size=16)
    assert small.shape == (10000, 1, 16, 16)
    # 2x2 average pooling of the padded 28x28 digits, black border of one pixel
    assert torch.allclose(small[:, :, 1:15, 1:15], torch.nn.functional.avg_pool2d(x[:, :, 2:30, 2:30], 2))
    assert float(small[:, :, 0].max()) == -1.0
    assert sorted(torch.unique(y).tolist()) == list(range(10))


def test_load_classifier_and_sample_quality(tmp_path, unet):
    from diffusers import DDIMScheduler
    from prunekit_diffusion.quality import DigitClassifier, load_classifier, sample_quality
    from safetensors.torch import save_file

    torch.manual_seed(0)
    clf = DigitClassifier()
    save_file(clf.state_dict(), str(tmp_path / "c.safetensors"))
    again = load_classifier(tmp_path / "c.safetensors")
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    assert not again.training and torch.equal(again(x), clf.eval()(x))
    real = clf.features(torch.rand(20, 1, 16, 16) * 2 - 1).detach()
    unet.train()
    a = sample_quality(unet, DDIMScheduler(), again, real, n=10, steps=2)
    b = sample_quality(unet, DDIMScheduler(), again, real, n=10, steps=2)
    assert unet.training  # mode restored
    assert 0.0 <= a["accuracy"] <= 1.0 and a["frechet"] > 0
    assert (a["accuracy"], a["frechet"]) == (b["accuracy"], b["frechet"])  # seeded per sample


def test_classifier_metrics_per_sample_correctness():
    from prunekit_diffusion.quality import DigitClassifier, classifier_metrics

    torch.manual_seed(0)
    clf = DigitClassifier().eval()
    x = torch.rand(12, 1, 16, 16) * 2 - 1
    pred = clf(x).argmax(1)
    labels = torch.where(torch.arange(12) % 3 == 0, pred, (pred + 1) % 10)  # every third one right
    real = clf.features(torch.rand(20, 1, 16, 16) * 2 - 1).detach()
    m = classifier_metrics(clf, x, labels, real, per_sample=True)
    assert m["correct"] == "100" * 4 and m["accuracy"] == pytest.approx(4 / 12)
    assert "correct" not in classifier_metrics(clf, x, labels, real)
