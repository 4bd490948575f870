"""scripts/cropr_images.py: train and bench on an array of images; one-line errors."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "cropr_images.py"


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("cropr_images", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_then_bench(cli, vit_cls, tmp_path, capsys):
    vit_cls.save_pretrained(tmp_path / "vit")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", images=rng.integers(0, 256, (12, 40, 40), dtype=np.uint8),
             labels=rng.integers(0, 10, 12))
    rc = cli.main(["train", "--model", str(tmp_path / "vit"), "--images", str(tmp_path / "data.npz"),
                   "--out", str(tmp_path / "pruned"), "--epochs", "1", "--batch", "6", "--prune-counts", "3,2"])
    assert rc == 0
    meta = json.loads((tmp_path / "pruned" / "cropr_config.json").read_text())
    assert meta["config"]["prune_counts"] == [3, 2] and meta["config"]["aux_out"] == 0
    rc = cli.main(["bench", "--model", str(tmp_path / "pruned"), "--images", str(tmp_path / "data.npz"),
                   "--reps", "1", "--batch", "4", "--json", str(tmp_path / "b.json")])
    assert rc == 0
    res = json.loads((tmp_path / "b.json").read_text())
    assert res["token_counts"] == [17, 14, 12, 12]
    assert 0.0 <= res["pruned_accuracy"] <= 1.0 and res["unpruned_images_per_s"] > 0
    assert "machine" in res


def test_errors_are_one_line(cli, vit_cls, tmp_path, capsys):
    vit_cls.save_pretrained(tmp_path / "vit")
    capsys.readouterr()
    rc = cli.main(["train", "--model", str(tmp_path / "vit"), "--images", str(tmp_path / "nope.npy"),
                   "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "nope.npy: no such file" in err and err.count("\n") == 1
    np.save(tmp_path / "x.npy", np.zeros((4, 2, 5, 5, 5)))
    rc = cli.main(["bench", "--model", str(tmp_path / "vit"), "--images", str(tmp_path / "x.npy")])
    assert rc == 1
    np.save(tmp_path / "x.npy", np.zeros((4, 32, 32)))
    np.save(tmp_path / "y.npy", np.zeros(4))
    rc = cli.main(["train", "--model", str(tmp_path / "vit"), "--images", str(tmp_path / "x.npy"),
                   "--labels", str(tmp_path / "y.npy"), "--out", str(tmp_path / "o"), "--prune-cuont", "3"])
    assert rc == 2 and "unknown option --prune-cuont" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_folder_of_class_subfolders(cli, vit_cls, tmp_path):
    Image = pytest.importorskip("PIL.Image")

    vit_cls.save_pretrained(tmp_path / "vit")
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    x, y = cli.load_images(str(tmp_path / "imgs"), None)
    assert x.shape == (6, 3, 40, 40) and y.tolist() == [0, 0, 0, 1, 1, 1] and 0.0 <= x.min() <= x.max() <= 1.0
    rc = cli.main(["train", "--model", str(tmp_path / "vit"), "--images", str(tmp_path / "imgs"),
                   "--out", str(tmp_path / "pruned"), "--epochs", "1", "--batch", "3", "--prune-count", "2"])
    assert rc == 0 and (tmp_path / "pruned" / "cropr.safetensors").exists()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "imgs" / "dog" / "small.png")
    assert cli.main(["bench", "--model", str(tmp_path / "pruned"), "--images", str(tmp_path / "imgs")]) == 1
