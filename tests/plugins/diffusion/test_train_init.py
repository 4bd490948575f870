"""scripts/train_mnist_diffusion.py ``--init``: training continues from a saved pipeline's denoiser."""

import json

import pytest

from .conftest import load_script

torch = pytest.importorskip("torch")


def saved_dit(folder, seed):
    from diffusers import DDIMScheduler

    from prunekit_diffusion.pipeline import ClassConditionalPipeline

    train = load_script("train_mnist_diffusion.py")
    torch.manual_seed(seed)
    model = train.build_denoiser("dit").eval()
    ClassConditionalPipeline(denoiser=model, scheduler=DDIMScheduler()).save_pretrained(folder)
    (folder / "train_log.json").write_text(json.dumps({"steps": 7, "log": [1, 2]}))
    return model


def test_init_continues_from_the_saved_denoiser(tmp_path):
    from prunekit_diffusion.pipeline import ClassConditionalPipeline

    train = load_script("train_mnist_diffusion.py")
    start = saved_dit(tmp_path / "start", seed=123)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(train.N_TRAIN, 1, 16, 16, generator=g), torch.randint(0, 10, (train.N_TRAIN,), generator=g)
    info = train.train_denoiser("dit", x, y, tmp_path, steps=1, batch=4, lr=1e-3, seed=0, init=tmp_path / "start")
    out = ClassConditionalPipeline.from_pretrained(tmp_path / "dit").denoiser
    torch.manual_seed(0)
    fresh = train.build_denoiser("dit")  # what training would have started from without --init
    p_out, p_start, p_fresh = (torch.cat([p.flatten() for p in m.parameters()]) for m in (out, start, fresh))
    # one warm-up step (lr 5e-6): within 1e-4 of the start, far from a fresh initialisation
    assert (p_out - p_start).abs().max() < 1e-4
    assert (p_out - p_fresh).abs().max() > 0.1
    assert info["init"]["path"] == str(tmp_path / "start") and info["init"]["steps"] == 7 and "log" not in info["init"]
    assert json.loads((tmp_path / "dit" / "train_log.json").read_text())["init"]["steps"] == 7


def test_init_of_another_kind_is_refused(tmp_path):
    train = load_script("train_mnist_diffusion.py")
    saved_dit(tmp_path / "start", seed=0)
    x, y = torch.zeros(train.N_TRAIN, 1, 16, 16), torch.zeros(train.N_TRAIN, dtype=torch.long)
    with pytest.raises(SystemExit, match="not a unet denoiser"):
        train.train_denoiser("unet", x, y, tmp_path, steps=1, batch=2, lr=1e-3, seed=0, init=tmp_path / "start")
