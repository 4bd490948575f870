"""scripts/recover_diffusion.py: fine-tunes a pruned directory against its original and writes a reloadable one."""

import numpy as np
import pytest
import torch

from .conftest import load_script, make_unet


@pytest.fixture(scope="module")
def script():
    return load_script("recover_diffusion.py")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    from typer.testing import CliRunner

    from prunekit.cli import app

    root = tmp_path_factory.mktemp("recover")
    make_unet().save_pretrained(root / "orig")
    r = CliRunner().invoke(app, ["prune", str(root / "orig"), "-m", "random-operator", "--keep", "0.7",
                                 "-o", str(root / "pruned"), "--calib-n", "2", "--steps", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    g = np.random.default_rng(0)
    np.savez(root / "data.npz", images=g.uniform(-1, 1, (32, 1, 16, 16)).astype(np.float32),
             labels=np.arange(32) % 10)
    return root


def test_recovers_into_a_reloadable_pruned_directory(script, dirs, tmp_path):
    from prunekit_diffusion import load_pruned

    out = tmp_path / "rec"
    rc = script.main([str(dirs / "orig"), str(dirs / "pruned"), "--data", str(dirs / "data.npz"), "-o", str(out),
                      "--steps", "30", "--batch-size", "8", "--lr", "2e-3", "--alpha", "10"])
    assert rc == 0
    before, after = load_pruned(dirs / "pruned"), load_pruned(out)
    assert [n for n, _ in before.named_parameters()] == [n for n, _ in after.named_parameters()]  # same pruned shape
    changed = [not torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters())]
    assert any(changed)
    log = __import__("json").loads((out / "recovery.json").read_text())["log"]
    assert log[-1]["distill"] < log[0]["distill"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("change,code,msg", [
    ({"data": "missing.npz"}, 1, "missing.npz"),
    ({"steps": "0"}, 2, "--steps"),
    ({"nolabels": True}, 1, "labels"),
    ({"extra": ["--task-weight", "0", "--alpha", "0"]}, 2, "--task-weight"),
])
def test_bad_input_one_line_and_nothing_written(script, dirs, tmp_path, capsys, change, code, msg):
    data = dirs / "data.npz"
    if change.get("nolabels"):
        data = tmp_path / "nolabels.npz"
        np.savez(data, images=np.zeros((4, 1, 16, 16), np.float32))
    if "data" in change:
        data = tmp_path / change["data"]
    out = tmp_path / "rec"
    rc = script.main([str(dirs / "orig"), str(dirs / "pruned"), "--data", str(data), "-o", str(out),
                      "--steps", change.get("steps", "2"), "--batch-size", "4", *change.get("extra", [])])
    err = capsys.readouterr().err
    assert rc == code and msg in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
